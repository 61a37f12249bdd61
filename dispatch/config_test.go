package dispatch_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

// oneServer is a valid lane for the validation tests (nothing is sent to it).
var oneServer = dispatch.Lane{Servers: []dispatch.Server{{URL: "http://127.0.0.1:9"}}}

// laneOfOne returns a lane of one server with the given URL and weight (nil = default).
func laneOfOne(url string, weight *int) dispatch.Lane {
	return dispatch.Lane{Servers: []dispatch.Server{{URL: url, Weight: weight}}}
}

// withFallback returns a valid lane whose fallback is fallback.
func withFallback(fallback string) dispatch.Lane {
	l := dispatch.Lane{Servers: oneServer.Servers, Fallback: fallback}
	return l
}

// stickyWith returns a valid lane with sticky sessions by the given cookie.
func stickyWith(cookie dispatch.StickyCookie) dispatch.Lane {
	return dispatch.Lane{Servers: oneServer.Servers, Sticky: &dispatch.Sticky{Cookie: cookie}}
}

// strp returns a pointer to s.
func strp(s string) *string { return &s }

func TestCreateConfigDefaults(t *testing.T) {
	cfg := dispatch.CreateConfig()
	if cfg.Header != "X-Gray-Lane" || cfg.UnknownLane != "next" || cfg.FlushInterval != "100ms" {
		t.Fatalf("defaults %+v", cfg)
	}
	if _, err := dispatch.New(context.Background(), http.NotFoundHandler(), cfg, "defaults"); err != nil {
		t.Fatalf("New with the default configuration: %v", err)
	}
	if _, err := dispatch.New(context.Background(), http.NotFoundHandler(), &dispatch.Config{}, "zero"); err != nil {
		t.Fatalf("New with a zero configuration: %v", err)
	}
}

func TestValidConfigs(t *testing.T) {
	tests := []struct {
		name string
		cfg  dispatch.Config
	}{
		{name: "drained lane", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"a": laneOfOne("http://127.0.0.1:9", intp(0))}}},
		{name: "weights 0 and 1000", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"a": {Servers: []dispatch.Server{
			{URL: "http://127.0.0.1:9", Weight: intp(0)}, {URL: "https://127.0.0.1:10/base/", Weight: intp(1000)}}}}}},
		{name: "fallback chain", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{
			"a": withFallback("B"), "b": withFallback("c"), "c": withFallback("none")}}},
		{name: "case-insensitive lane", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"Canary.V2_x-1": oneServer}}},
		{name: "seconds", cfg: dispatch.Config{Timeouts: dispatch.Timeouts{Dial: "3", ResponseHeader: "0", Idle: "1m30s"}}},
		{name: "flush every write", cfg: dispatch.Config{FlushInterval: "-1"}},
		{name: "health off", cfg: dispatch.Config{Health: dispatch.Health{MaxFails: intp(0), Window: "0", Cooldown: "0"}}},
		{name: "reject", cfg: dispatch.Config{UnknownLane: "REJECT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if _, err := dispatch.New(context.Background(), http.NotFoundHandler(), &cfg, "valid"); err != nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestInvalidConfigs(t *testing.T) {
	tests := []struct {
		name string
		cfg  dispatch.Config
		want string
	}{
		{name: "header", cfg: dispatch.Config{Header: "X Lane"},
			want: `header: "X Lane": not a valid header name`},
		{name: "header Host", cfg: dispatch.Config{Header: "HOST"},
			want: `header: "HOST": the request's host, not a header in Traefik`},
		{name: "servedByHeader", cfg: dispatch.Config{ServedByHeader: "X:Up"},
			want: `servedByHeader: "X:Up": not a valid header name`},
		{name: "unknownLane", cfg: dispatch.Config{UnknownLane: "drop"},
			want: `unknownLane: "drop": must be next or reject`},
		{name: "lane name", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"-canary": oneServer}},
			want: `lanes.-canary: "-canary": bad lane name, want [a-z0-9][a-z0-9._-]{0,62}`},
		{name: "lane name chars", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"can ary": oneServer}},
			want: `lanes.can ary: "can ary": bad lane name`},
		{name: "lane name control character", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"\x7f": oneServer}},
			want: `lanes: "\x7f": bad lane name, want [a-z0-9][a-z0-9._-]{0,62}`},
		{name: "lane name newline", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary\nx": oneServer}},
			want: `lanes: "canary\nx": bad lane name`},
		{name: "lane name Kelvin sign", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"\u212a": oneServer}},
			want: "lanes.\u212a: \"\u212a\": bad lane name"},
		{name: "lane name too long", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"a123456789012345678901234567890123456789012345678901234567890123": oneServer}},
			want: `lanes.a123456789012345678901234567890123456789012345678901234567890123: "a1`},
		{name: "lane name reserved", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"none": oneServer}},
			want: `lanes.none: "none": reserved, it is a fallback keyword`},
		{name: "lane name twice", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"Canary": oneServer, "canary": oneServer}},
			want: `lanes.canary: "canary": same lane as another key (lane names are case-insensitive)`},
		{name: "no servers", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": {}}},
			want: `lanes.canary.servers: must not be empty`},
		{name: "url scheme", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("ftp://10.0.0.5", nil)}},
			want: `lanes.canary.servers[0].url: "ftp://10.0.0.5": scheme must be http or https`},
		{name: "url no scheme", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("10.0.0.5:8080", nil)}},
			want: `lanes.canary.servers[0].url: "10.0.0.5:8080": `},
		{name: "url no host", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http:///path", nil)}},
			want: `lanes.canary.servers[0].url: "http:///path": no host`},
		{name: "url port only", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http://:8080", nil)}},
			want: `lanes.canary.servers[0].url: "http://:8080": no host`},
		{name: "url query", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http://10.0.0.5/?a=b", nil)}},
			want: `lanes.canary.servers[0].url: "http://10.0.0.5/?a=b": must not have user info, a query or a fragment`},
		{name: "url port too big", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http://10.0.0.5:99999", nil)}},
			want: `lanes.canary.servers[0].url: "http://10.0.0.5:99999": port must be 1 to 65535`},
		{name: "url port 0", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http://10.0.0.5:0", nil)}},
			want: `lanes.canary.servers[0].url: "http://10.0.0.5:0": port must be 1 to 65535`},
		{name: "url host not UTF-8", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http://o\x96her.example", nil)}},
			want: `lanes.canary.servers[0].url: "http://o\x96her.example": host is not valid UTF-8`},
		{name: "url unparsable", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http://10.0.0.5:port", nil)}},
			want: `lanes.canary.servers[0].url: "http://10.0.0.5:port": not a URL`},
		{name: "weight too large", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": {Servers: []dispatch.Server{
			{URL: "http://10.0.0.5"}, {URL: "http://10.0.0.6", Weight: intp(1001)}}}}},
			want: `lanes.canary.servers[1].weight: 1001: must be 0 (drained) to 1000`},
		{name: "weight negative", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": laneOfOne("http://10.0.0.5", intp(-1))}},
			want: `lanes.canary.servers[0].weight: -1: must be 0 (drained) to 1000`},
		{name: "fallback unknown", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": withFallback("blue")}},
			want: `lanes.canary.fallback: "blue": must be next, none or a configured lane`},
		{name: "fallback Kelvin sign", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"k": withFallback("\u212a")}},
			want: "lanes.k.fallback: \"\u212a\": must be next, none or a configured lane"},
		{name: "fallback self", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": withFallback("Canary")}},
			want: `lanes.canary.fallback: cycle canary -> canary`},
		{name: "fallback cycle", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"a": withFallback("b"), "b": withFallback("a")}},
			want: `lanes.a.fallback: cycle a -> b -> a`},
		{name: "fallback cycle further on", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{
			"a": withFallback("b"), "b": withFallback("c"), "c": withFallback("d"), "d": withFallback("b")}},
			want: `lanes.b.fallback: cycle b -> c -> d -> b`},
		{name: "timeouts.dial", cfg: dispatch.Config{Timeouts: dispatch.Timeouts{Dial: "5 s"}},
			want: `timeouts.dial: "5 s": bad duration, want e.g. "5s" or a number of seconds`},
		{name: "timeouts.responseHeader", cfg: dispatch.Config{Timeouts: dispatch.Timeouts{ResponseHeader: "-1s"}},
			want: `timeouts.responseHeader: "-1s": must not be negative`},
		{name: "timeouts.idle", cfg: dispatch.Config{Timeouts: dispatch.Timeouts{Idle: "99999999999999"}},
			want: `timeouts.idle: "99999999999999": too large`},
		{name: "health.maxFails", cfg: dispatch.Config{Health: dispatch.Health{MaxFails: intp(-2)}},
			want: `health.maxFails: -2: must be 0 (off) to 100`},
		{name: "health.maxFails too many", cfg: dispatch.Config{Health: dispatch.Health{MaxFails: intp(101)}},
			want: `health.maxFails: 101: must be 0 (off) to 100`},
		{name: "health.window", cfg: dispatch.Config{Health: dispatch.Health{Window: "ten"}},
			want: `health.window: "ten": bad duration`},
		{name: "health.window zero", cfg: dispatch.Config{Health: dispatch.Health{Window: "0s"}},
			want: `health.window: "0s": must be more than 0 when maxFails is not 0`},
		{name: "health.cooldown", cfg: dispatch.Config{Health: dispatch.Health{Cooldown: "1h-"}},
			want: `health.cooldown: "1h-": bad duration`},
		{name: "health.cooldown zero", cfg: dispatch.Config{Health: dispatch.Health{MaxFails: intp(1), Cooldown: "0"}},
			want: `health.cooldown: "0": must be more than 0 when maxFails is not 0`},
		{name: "flushInterval", cfg: dispatch.Config{FlushInterval: "-2"},
			want: `flushInterval: "-2": must not be negative`},
		{name: "flushInterval unit", cfg: dispatch.Config{FlushInterval: "100 ms"},
			want: `flushInterval: "100 ms": bad duration`},
		{name: "sticky.cookie.name", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": stickyWith(dispatch.StickyCookie{Name: "a b"})}},
			want: `lanes.canary.sticky.cookie.name: "a b": not a valid header name`},
		{name: "sticky.cookie.sameSite", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": stickyWith(dispatch.StickyCookie{SameSite: "loose"})}},
			want: `lanes.canary.sticky.cookie.sameSite: "loose": must be none, lax, strict or default`},
		{name: "sticky.cookie.sameSite none", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": stickyWith(dispatch.StickyCookie{SameSite: "None"})}},
			want: `lanes.canary.sticky.cookie.sameSite: "None": needs secure`},
		{name: "sticky.cookie.maxAge", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": stickyWith(dispatch.StickyCookie{MaxAge: -1})}},
			want: `lanes.canary.sticky.cookie.maxAge: -1: must not be negative`},
		{name: "sticky.cookie.path", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": stickyWith(dispatch.StickyCookie{Path: strp("app")})}},
			want: `lanes.canary.sticky.cookie.path: "app": must start with /`},
		{name: "sticky.cookie.domain", cfg: dispatch.Config{Lanes: map[string]dispatch.Lane{"canary": stickyWith(dispatch.StickyCookie{Domain: "bad domain"})}},
			want: `lanes.canary.sticky.cookie.domain: "bad domain": `},
		{name: "tls.rootCAs missing file", cfg: dispatch.Config{TLS: dispatch.TLS{RootCAs: []string{"/nonexistent/ca.pem"}}},
			want: `tls.rootCAs[0]: "/nonexistent/ca.pem": not PEM text, and not a file that can be read: open /nonexistent/ca.pem: `},
		{name: "tls.rootCAs missing file with a newline", cfg: dispatch.Config{TLS: dispatch.TLS{RootCAs: []string{"/nonexistent/ca\n.pem"}}},
			want: `tls.rootCAs[0]: "/nonexistent/ca…": not PEM text, and not a file that can be read: no such file or directory`},
		{name: "tls.rootCAs missing file with a control character", cfg: dispatch.Config{TLS: dispatch.TLS{RootCAs: []string{"/nonexistent/ca\x01.pem"}}},
			want: `tls.rootCAs[0]: "/nonexistent/ca\x01.pem": not PEM text, and not a file that can be read: no such file or directory`},
		{name: "tls.rootCAs empty", cfg: dispatch.Config{TLS: dispatch.TLS{RootCAs: []string{" "}}},
			want: `tls.rootCAs[0]: " ": empty: want a PEM file path or PEM text`},
		{name: "tls.rootCAs not a certificate", cfg: dispatch.Config{TLS: dispatch.TLS{RootCAs: []string{"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}}},
			want: `tls.rootCAs[0]: "-----BEGIN CERTIFICATE-----…": no PEM certificate in it`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			h, err := dispatch.New(context.Background(), http.NotFoundHandler(), &cfg, "invalid")
			if err == nil {
				t.Fatalf("New accepted the configuration (handler %T)", h)
			}
			if got := err.Error(); len(got) < len(tc.want) || got[:len(tc.want)] != tc.want {
				t.Fatalf("error %q, want it to start with %q", got, tc.want)
			}
		})
	}
	if _, err := dispatch.New(context.Background(), http.NotFoundHandler(), nil, "nil"); err == nil {
		t.Fatal("New accepted a nil configuration")
	}
}
