package mark_test

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

func TestIncoming(t *testing.T) {
	tests := []struct {
		name     string
		incoming string
		trusted  []string
		depth    int // ipStrategy.depth
		req      request
		want     string
	}{
		{name: "strip removes a spoofed lane", incoming: "strip",
			req: request{headers: []string{"X-Gray-Lane", "canary"}}, want: "-"},
		{name: "strip is the default", incoming: "",
			req: request{headers: []string{"X-Gray-Lane", "canary"}}, want: "-"},
		{name: "strip then rules", incoming: "strip",
			req: request{target: "/beta", headers: []string{"X-Gray-Lane", "other"}}, want: "canary"},
		{name: "keep trusts the header and skips the rules", incoming: "keep",
			req: request{target: "/beta", headers: []string{"X-Gray-Lane", "blue"}}, want: "blue"},
		{name: "keep lower-cases", incoming: "keep",
			req: request{headers: []string{"X-Gray-Lane", "Blue-2"}}, want: "blue-2"},
		{name: "keep keeps only the first value", incoming: "keep",
			req: request{headers: []string{"X-Gray-Lane", "blue", "X-Gray-Lane", "green"}}, want: "blue"},
		{name: "keep removes an invalid lane and runs the rules", incoming: "keep",
			req: request{target: "/beta", headers: []string{"X-Gray-Lane", "Bad Lane!"}}, want: "canary"},
		{name: "keep removes an invalid lane", incoming: "keep",
			req: request{headers: []string{"X-Gray-Lane", "-x"}}, want: "-"},
		{name: "keep with an empty header runs the rules", incoming: "keep",
			req: request{target: "/beta", headers: []string{"X-Gray-Lane", ""}}, want: "canary"},
		{name: "keep without header runs the rules", incoming: "KEEP",
			req: request{target: "/beta"}, want: "canary"},
		{name: "trustedIPs keeps from a trusted peer", incoming: "trustedIPs", trusted: []string{"10.0.0.0/8"},
			req: request{remote: "10.1.2.3:5555", headers: []string{"X-Gray-Lane", "blue"}}, want: "blue"},
		{name: "trustedIPs keeps from a trusted single address", incoming: "trustedIPs", trusted: []string{"2001:db8::1"},
			req: request{remote: "[2001:db8::1]:5555", headers: []string{"X-Gray-Lane", "blue"}}, want: "blue"},
		{name: "trustedIPs strips from another peer", incoming: "trustedIPs", trusted: []string{"10.0.0.0/8"},
			req: request{remote: "192.0.2.9:5555", headers: []string{"X-Gray-Lane", "blue"}}, want: "-"},
		{name: "trustedIPs strips then rules", incoming: "trustedips", trusted: []string{"10.0.0.0/8"},
			req: request{target: "/beta", remote: "192.0.2.9:5555", headers: []string{"X-Gray-Lane", "blue"}}, want: "canary"},
		{name: "trustedIPs strips when RemoteAddr is not an address", incoming: "trustedIPs", trusted: []string{"0.0.0.0/0"},
			req: request{remote: "@unix", headers: []string{"X-Gray-Lane", "blue"}}, want: "-"},
		{name: "X-Forwarded-For is not the peer", incoming: "trustedIPs", trusted: []string{"10.0.0.0/8"},
			req: request{remote: "192.0.2.9:5555", headers: []string{"X-Forwarded-For", "10.0.0.1", "X-Gray-Lane", "blue"}}, want: "-"},
		// trustedIPs always checks the direct peer, whatever ipStrategy makes the client IP.
		{name: "ipStrategy's client IP is not the peer, untrusted", incoming: "trustedIPs", trusted: []string{"10.0.0.0/8"}, depth: 1,
			req: request{remote: "192.0.2.9:5555", headers: []string{"X-Forwarded-For", "10.0.0.1", "X-Gray-Lane", "blue"}}, want: "-"},
		{name: "ipStrategy's client IP is not the peer, trusted", incoming: "trustedIPs", trusted: []string{"10.0.0.0/8"}, depth: 1,
			req: request{remote: "10.1.2.3:5555", headers: []string{"X-Forwarded-For", "192.0.2.9", "X-Gray-Lane", "blue"}}, want: "blue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(mark.Rule{Name: "beta", Lane: "canary", Path: mark.PathMatch{Prefix: "/beta"}})
			cfg.Incoming = tt.incoming
			cfg.TrustedIPs = tt.trusted
			cfg.IPStrategy.Depth = tt.depth
			if got := laneOf(newMark(t, cfg), tt.req); got != tt.want {
				t.Errorf("lane %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCustomHeaderAndSpoofing(t *testing.T) {
	cfg := config(mark.Rule{Name: "beta", Lane: "canary", Path: mark.PathMatch{Prefix: "/beta"}})
	cfg.Header = "x-lane"
	req := request{target: "/", headers: []string{"X-Lane", "canary", "x-lane", "canary2"}}.build()
	var got []string
	probe := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { got = r.Header["X-Lane"] })
	h, err := mark.New(context.Background(), probe, cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	serve(h, req)
	if got != nil {
		t.Errorf("spoofed lane kept: %q", got)
	}
	serve(h, request{target: "/beta/x"}.build())
	if strings.Join(got, ",") != "canary" {
		t.Errorf("lane %q, want canary", got)
	}
}

func TestDefaultLaneAndRuleHeader(t *testing.T) {
	tests := []struct {
		name        string
		defaultLane string
		ruleHeader  string
		target      string
		wantLane    string
		wantRule    string
	}{
		{name: "match", target: "/beta", wantLane: "canary", wantRule: ""},
		{name: "match with rule header", ruleHeader: "X-Gray-Rule", target: "/beta", wantLane: "canary", wantRule: "beta"},
		{name: "second rule", ruleHeader: "x-gray-rule", target: "/alpha", wantLane: "blue", wantRule: "alpha"},
		{name: "no match, no default", ruleHeader: "X-Gray-Rule", target: "/", wantLane: "-", wantRule: ""},
		{name: "no match, default", defaultLane: "Stable", ruleHeader: "X-Gray-Rule", target: "/", wantLane: "stable", wantRule: ""},
		{name: "match, default", defaultLane: "stable", ruleHeader: "X-Gray-Rule", target: "/alpha/x", wantLane: "blue", wantRule: "alpha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(
				mark.Rule{Name: "beta", Lane: "canary", Path: mark.PathMatch{Prefix: "/beta"}},
				mark.Rule{Name: "alpha", Lane: "Blue", Path: mark.PathMatch{Prefix: "/alpha"}},
			)
			cfg.DefaultLane = tt.defaultLane
			cfg.RuleHeader = tt.ruleHeader
			rec := serve(newMark(t, cfg), request{target: tt.target}.build())
			if got := rec.Header().Get(laneSeen); got != tt.wantLane {
				t.Errorf("lane %q, want %q", got, tt.wantLane)
			}
			got := rec.Header().Values("X-Gray-Rule")
			if tt.wantRule == "" && got != nil || tt.wantRule != "" && (len(got) != 1 || got[0] != tt.wantRule) {
				t.Errorf("rule header %q, want %q", got, tt.wantRule)
			}
		})
	}
}

func TestZeroConfigTakesDefaults(t *testing.T) {
	cfg := &mark.Config{Rules: []mark.Rule{{Name: "beta", Lane: "canary", Path: mark.PathMatch{Prefix: "/beta"}}}}
	h := newMark(t, cfg)
	if got := laneOf(h, request{target: "/beta", headers: []string{"X-Gray-Lane", "x"}}); got != "canary" {
		t.Errorf("lane %q, want canary", got)
	}
	if got := laneOf(h, request{target: "/", headers: []string{"X-Gray-Lane", "x"}}); got != "-" {
		t.Errorf("lane %q, want none", got)
	}
	if _, err := mark.New(context.Background(), http.HandlerFunc(backend), &mark.Config{}, "empty"); err != nil {
		t.Errorf("empty config: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	ok := mark.Rule{Name: "ok", Lane: "canary", Path: mark.PathMatch{Prefix: "/"}}
	tests := []struct {
		name string
		cfg  mark.Config
		want string
	}{
		{name: "header", cfg: mark.Config{Header: "X Lane"}, want: `header: "X Lane": `},
		{name: "incoming", cfg: mark.Config{Incoming: "drop"}, want: `incoming: "drop": `},
		{name: "trustedIPs empty", cfg: mark.Config{Incoming: "trustedIPs"}, want: `trustedIPs: must not be empty`},
		{name: "trustedIPs bad", cfg: mark.Config{Incoming: "trustedIPs", TrustedIPs: []string{"10.0.0/8"}}, want: `trustedIPs[0]: "10.0.0/8": `},
		{name: "trustedIPs bad second", cfg: mark.Config{TrustedIPs: []string{"::1", "x"}}, want: `trustedIPs[1]: "x": `},
		{name: "ruleHeader", cfg: mark.Config{RuleHeader: "X:Rule"}, want: `ruleHeader: "X:Rule": `},
		{name: "defaultLane", cfg: mark.Config{DefaultLane: "Bad Lane!"}, want: `defaultLane: "Bad Lane!": `},
		{name: "identity header", cfg: mark.Config{Identity: mark.Identity{Header: "X User"}}, want: `identity.header: "X User": `},
		{name: "identity cookie", cfg: mark.Config{Identity: mark.Identity{Cookie: "a=b"}}, want: `identity.cookie: "a=b": `},
		{name: "rule name", cfg: mark.Config{Rules: []mark.Rule{ok, {Lane: "canary", Methods: []string{"GET"}}}}, want: `rules[1].name: must not be empty`},
		{name: "rule name control", cfg: mark.Config{Rules: []mark.Rule{{Name: "a\nb", Lane: "canary", Methods: []string{"GET"}}}}, want: `rules[0].name: "a\nb": `},
		{name: "duplicate name", cfg: mark.Config{Rules: []mark.Rule{ok, ok}}, want: `rules[1].name: "ok": already used by rules[0]`},
		{name: "lane", cfg: mark.Config{Rules: []mark.Rule{ok, {Name: "x", Lane: "Bad Lane!", Methods: []string{"GET"}}}}, want: `rules[1].lane: "Bad Lane!": `},
		{name: "lane empty", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Methods: []string{"GET"}}}}, want: `rules[0].lane: "": `},
		{name: "lane too long", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: strings.Repeat("a", 64), Methods: []string{"GET"}}}}, want: `rules[0].lane: "aaaa`},
		{name: "no condition", cfg: mark.Config{Rules: []mark.Rule{ok, {Name: "y", Lane: "canary", Methods: []string{"GET"}}, {Name: "x", Lane: "canary"}}}, want: `rules[2]: no condition`},
		{name: "empty user", cfg: mark.Config{Identity: mark.Identity{Query: "u"}, Rules: []mark.Rule{{Name: "x", Lane: "canary", Users: []string{"a", ""}}}}, want: `rules[0].users[1]: must not be empty`},
		{name: "user too long", cfg: mark.Config{Identity: mark.Identity{Query: "u"}, Rules: []mark.Rule{{Name: "x", Lane: "canary", Users: []string{"a", strings.Repeat("u", 257)}}}}, want: `rules[0].users[1]: "uuuu`},
		{name: "users without identity", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Users: []string{"a"}}}}, want: `rules[0].users[0]: "a": no identity source`},
		{name: "versions without source", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Versions: ">=1"}}}, want: `rules[0].versions: ">=1": no version source`},
		{name: "version header", cfg: mark.Config{Version: mark.VersionSource{Header: "X App"}}, want: `version.header: "X App": `},
		{name: "bad version", cfg: withVersion(mark.Rule{Name: "a", Lane: "canary", Users: []string{"u"}}, mark.Rule{Name: "b", Lane: "canary", Versions: "1"}, mark.Rule{Name: "c", Lane: "canary", Versions: ">=2.x.y"}), want: `rules[2].versions: ">=2.x.y": bad version "2.x.y"`},
		{name: "bad operator", cfg: withVersion(mark.Rule{Name: "c", Lane: "canary", Versions: "=>2"}), want: `rules[0].versions: "=>2": bad operator "=>"`},
		{name: "empty constraint part", cfg: withVersion(mark.Rule{Name: "c", Lane: "canary", Versions: ">=1,"}), want: `rules[0].versions: ">=1,": empty comparison`},
		{name: "empty alternative", cfg: withVersion(mark.Rule{Name: "c", Lane: "canary", Versions: "1 || "}), want: `rules[0].versions: "1 || ": empty comparison`},
		{name: "blank constraint", cfg: withVersion(mark.Rule{Name: "c", Lane: "canary", Versions: " "}), want: `rules[0].versions: " ": empty constraint`},
		{name: "wildcard pre-release", cfg: withVersion(mark.Rule{Name: "c", Lane: "canary", Versions: "1.x-beta"}), want: `rules[0].versions: "1.x-beta": bad version "1.x-beta"`},
		{name: "percent too high", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Percent: float(120)}}}, want: `rules[0].percent: 120: must be between 0 and 100`},
		{name: "percent negative", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Percent: float(-1)}}}, want: `rules[0].percent: -1: must be between 0 and 100`},
		{name: "percent NaN", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Percent: float(math.NaN())}}}, want: `rules[0].percent: NaN: must be between 0 and 100`},
		{name: "percent decimals", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Percent: float(10.555)}}}, want: `rules[0].percent: 10.555: must have at most two decimals`},
		{name: "percent decimals far out", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Percent: float(12.3400000001)}}}, want: `rules[0].percent: 12.3400000001: must have at most two decimals`},
		{name: "from", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", From: "2026-12-01"}}}, want: `rules[0].from: "2026-12-01": must be an RFC 3339 time`},
		{name: "from offset 24h", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", From: "2026-12-01T08:00:00+24:00"}}}, want: `rules[0].from: "2026-12-01T08:00:00+24:00": must be an RFC 3339 time`},
		{name: "from offset minutes 60", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", From: "2026-12-01T08:00:00+05:60"}}}, want: `rules[0].from: "2026-12-01T08:00:00+05:60": must be an RFC 3339 time`},
		{name: "until", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Until: "tomorrow"}}}, want: `rules[0].until: "tomorrow": must be an RFC 3339 time`},
		{name: "until before from", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", From: "2026-12-01T08:00:00Z", Until: "2026-12-01T09:00:00+02:00"}}}, want: `rules[0].until: "2026-12-01T09:00:00+02:00": must be after from`},
		{name: "ramp at", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Ramp: []mark.RampStep{{At: "2026-12-01T08:00:00Z", Percent: 1}, {At: "x", Percent: 2}}}}}, want: `rules[0].ramp[1].at: "x": must be an RFC 3339 time`},
		{name: "ramp unsorted", cfg: mark.Config{Rules: []mark.Rule{{Name: "a", Lane: "canary", Methods: []string{"GET"}}, {Name: "c", Lane: "canary", Ramp: []mark.RampStep{{At: "2026-12-02T08:00:00Z", Percent: 1}, {At: "2026-12-01T08:00:00Z", Percent: 2}}}}}, want: `rules[1].ramp[1].at: "2026-12-01T08:00:00Z": must be after ramp[0].at`},
		{name: "ramp duplicate", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Ramp: []mark.RampStep{{At: "2026-12-01T08:00:00Z", Percent: 1}, {At: "2026-12-01T09:00:00+01:00", Percent: 2}}}}}, want: `rules[0].ramp[1].at: "2026-12-01T09:00:00+01:00": must be after ramp[0].at`},
		{name: "ramp percent", cfg: mark.Config{Rules: []mark.Rule{{Name: "c", Lane: "canary", Ramp: []mark.RampStep{{At: "2026-12-01T08:00:00Z", Percent: 100.5}}}}}, want: `rules[0].ramp[0].percent: 100.5: must be between 0 and 100`},
		{name: "anonymous", cfg: mark.Config{Anonymous: "session"}, want: `anonymous: "session": must be cookie, ip, random or none`},
		{name: "ipStrategy depth", cfg: mark.Config{IPStrategy: mark.IPStrategy{Depth: -1}}, want: `ipStrategy.depth: -1: must be 0 (off) to 64`},
		{name: "ipStrategy depth big", cfg: mark.Config{IPStrategy: mark.IPStrategy{Depth: 65}}, want: `ipStrategy.depth: 65: must be 0 (off) to 64`},
		{name: "ipStrategy ipv6Subnet", cfg: mark.Config{IPStrategy: mark.IPStrategy{IPv6Subnet: 129}}, want: `ipStrategy.ipv6Subnet: 129: must be 0 (off) to 128`},
		{name: "ipStrategy excludedIPs", cfg: mark.Config{IPStrategy: mark.IPStrategy{ExcludedIPs: []string{"10.0.0.0/8", "10.0.0/8"}}}, want: `ipStrategy.excludedIPs[1]: "10.0.0/8": not a CIDR`},
		{name: "ipStrategy both", cfg: mark.Config{IPStrategy: mark.IPStrategy{Depth: 1, ExcludedIPs: []string{"10.0.0.0/8"}}}, want: `ipStrategy.excludedIPs: ["10.0.0.0/8"]: set either depth (1) or excludedIPs`},
		{name: "sticky name", cfg: mark.Config{StickyCookie: mark.StickyCookie{Name: "a b"}}, want: `stickyCookie.name: "a b": `},
		{name: "sticky maxAge", cfg: mark.Config{StickyCookie: mark.StickyCookie{MaxAge: "a month"}}, want: `stickyCookie.maxAge: "a month": `},
		{name: "sticky maxAge negative", cfg: mark.Config{StickyCookie: mark.StickyCookie{MaxAge: "-1h"}}, want: `stickyCookie.maxAge: "-1h": must not be negative`},
		{name: "sticky maxAge tiny", cfg: mark.Config{StickyCookie: mark.StickyCookie{MaxAge: "1ms"}}, want: `stickyCookie.maxAge: "1ms": must be at least 1s`},
		{name: "sticky maxAge huge", cfg: mark.Config{StickyCookie: mark.StickyCookie{MaxAge: "99999999999"}}, want: `stickyCookie.maxAge: "99999999999": too large`},
		{name: "sticky sameSite", cfg: mark.Config{StickyCookie: mark.StickyCookie{SameSite: "loose"}}, want: `stickyCookie.sameSite: "loose": `},
		{name: "sticky sameSite None without Secure", cfg: mark.Config{StickyCookie: mark.StickyCookie{SameSite: "none", Secure: boolPtr(false)}}, want: `stickyCookie.sameSite: "none": needs secure`},
		{name: "two paths", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Path: mark.PathMatch{Prefix: "/a", Exact: "/b"}}}}, want: `rules[0].path: prefix "/a", exact "/b": set only one of prefix, exact, contains and regex`},
		{name: "bad regex", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Path: mark.PathMatch{Regex: "(a"}}}}, want: `rules[0].path.regex: "(a": `},
		{name: "empty contains", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Path: mark.PathMatch{Contains: []string{"a", ""}}}}}, want: `rules[0].path.contains[1]: must not be empty`},
		{name: "method", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Methods: []string{"GET", "PO ST"}}}}, want: `rules[0].methods[1]: "PO ST": `},
		{name: "header name", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Headers: map[string]string{"X Region": "a"}}}}, want: `rules[0].headers["X Region"]: `},
		{name: "cookie name", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Cookies: map[string]string{"": "a"}}}}, want: `rules[0].cookies[""]: `},
		{name: "query name", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Query: map[string]string{"": "a"}}}}, want: `rules[0].query[""]: `},
		{name: "sourceIPs", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", SourceIPs: []string{"10.0.0.1", "300.0.0.0/8"}}}}, want: `rules[0].sourceIPs[1]: "300.0.0.0/8": `},
		{name: "users with spaces", cfg: mark.Config{Identity: mark.Identity{Header: "X-User-Id"}, Rules: []mark.Rule{{Name: "x", Lane: "canary", Users: []string{"1001", " 1002"}}}}, want: `rules[0].users[1]: " 1002": spaces around a user ID`},
		{name: "header Host", cfg: mark.Config{Header: "host"}, want: `header: "host": the request's host, not a header in Traefik`},
		{name: "prefix without slash", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Path: mark.PathMatch{Prefix: "beta"}}}}, want: `rules[0].path.prefix: "beta": must start with /`},
		{name: "exact without slash", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Path: mark.PathMatch{Exact: "beta"}}}}, want: `rules[0].path.exact: "beta": must start with /`},
		{name: "header value with spaces", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Headers: map[string]string{"X-Region": " cn-east"}}}}, want: `rules[0].headers["X-Region"]: " cn-east": spaces around the value`},
		{name: "header value with a tab", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Headers: map[string]string{"X-Region": "cn-east\t"}}}}, want: `rules[0].headers["X-Region"]: "cn-east\t": spaces around the value`},
		{name: "percent without key", cfg: mark.Config{Anonymous: "none", Rules: []mark.Rule{{Name: "x", Lane: "canary", Percent: float(10)}}}, want: `rules[0].percent: 10: never matches: no identity source, and anonymous none`},
		{name: "ramp without key", cfg: mark.Config{Anonymous: "None", Rules: []mark.Rule{{Name: "x", Lane: "canary", Ramp: []mark.RampStep{{At: "2026-12-01T08:00:00Z", Percent: 1}}}}}, want: `rules[0].ramp: never matches: no identity source, and anonymous none`},
		{name: "Host header", cfg: mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Headers: map[string]string{"host": "app.test"}}}}, want: `rules[0].headers["host"]: not a request header in Traefik`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			_, err := mark.New(context.Background(), http.HandlerFunc(backend), &cfg, "test")
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %q, want it to start with %q", err, tt.want)
			}
		})
	}
}

// TestNewRejectsOnOneLine checks errors that quote a value holding control characters: the
// whole error is one line (FuzzNewConfig found a regex whose error carried a raw control
// character from the regexp package's message).
func TestNewRejectsOnOneLine(t *testing.T) {
	tests := []struct{ regex, want string }{
		{"(\x11", `rules[0].path.regex: "(\x11": error parsing regexp: missing closing ): "(\x11"`},
		{"a\n(", `rules[0].path.regex: "a\n(": error parsing regexp: missing closing ): "a\n("`},
		{"(`\n", `rules[0].path.regex: "(` + "`" + `\n": error parsing regexp: missing closing ): "(` + "`" + `\n"`},
		{"(a", "rules[0].path.regex: \"(a\": error parsing regexp: missing closing ): `(a`"},
	}
	for _, tt := range tests {
		cfg := mark.Config{Rules: []mark.Rule{{Name: "x", Lane: "canary", Path: mark.PathMatch{Regex: tt.regex}}}}
		_, err := mark.New(context.Background(), http.HandlerFunc(backend), &cfg, "test")
		if err == nil || err.Error() != tt.want {
			t.Errorf("regex %q: error %q, want %q", tt.regex, err, tt.want)
		}
	}
}

// fuzzRequestConfig is the configuration of FuzzRequest: a rule for each kind of condition,
// every identity and version source, the anonymous key from the client IP (deterministic).
func fuzzRequestConfig() *mark.Config {
	cfg := config(
		mark.Rule{Name: "users", Lane: "users", Users: []string{"1", "alice"}},
		mark.Rule{Name: "versions", Lane: "versions", Versions: ">=2.0.0, <3 || ~3.1.0-rc"},
		mark.Rule{Name: "api", Lane: "paths", Path: mark.PathMatch{Regex: `^/api/v[0-9]+/`}, Methods: []string{"GET"}},
		mark.Rule{Name: "beta", Lane: "paths", Path: mark.PathMatch{Contains: []string{"beta", "/β/"}}},
		mark.Rule{Name: "fields", Lane: "fields", Headers: map[string]string{"X-Region": "eu"}, Cookies: map[string]string{"plan": "*"}, Query: map[string]string{"tier": "gold"}},
		mark.Rule{Name: "office", Lane: "office", SourceIPs: []string{"10.0.0.0/8", "2001:db8::/32"}},
		mark.Rule{Name: "half", Lane: "half", Percent: float(50)},
	)
	cfg.Identity = mark.Identity{Header: "X-User-Id", Cookie: "uid", Query: "uid", JWTClaim: "sub"}
	cfg.Version = mark.VersionSource{Header: "X-App-Version", Query: "appVersion"}
	cfg.Anonymous = "ip"
	return cfg
}

// fuzzRequestLanes are the lanes of fuzzRequestConfig, and "-" for none.
var fuzzRequestLanes = map[string]bool{"-": true, "users": true, "versions": true, "paths": true, "fields": true, "office": true, "half": true}

// fuzzRequestSeeds are the seed inputs of FuzzRequest, also run by TestRequestSeeds: path, raw
// query, Cookie, X-User-Id, Authorization, X-App-Version, X-Region, remote address and a spoofed
// lane header value.
var fuzzRequestSeeds = [][9]string{
	{"/", "", "", "", "", "", "", "192.0.2.1:1234", ""},
	{"/api/v2/x", "uid=alice&tier=gold", "plan=a; uid=1", "", "", "2.5", "eu", "10.1.2.3:5", "users"},
	{"/β/", "appVersion=3.1.0-rc.2&uid=%zz;x", "plan", "", "Bearer e30.eyJzdWIiOiJhbGljZSJ9.x", "v3.1.0-rc.10", "EU", "[2001:db8::1]:80", " Half "},
	{"", "%", "uid=\"\x00", "\xff", "Bearer ...", "1..2", "eu", "garbage", "\r\n"},
}

// checkRequest sends the request that the fuzz input in describes through mark twice, with the
// spoofed lane header and without it: under incoming strip (the default) both must get the
// same lane, one of the configured lanes or none.
func checkRequest(t testing.TB, h http.Handler, in [9]string) {
	lanes := [2]string{}
	for i := 0; i < 2; i++ {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path, req.URL.RawQuery, req.RemoteAddr = in[0], in[1], in[7]
		req.Header = http.Header{"Cookie": {in[2]}, "X-User-Id": {in[3]}, "Authorization": {in[4]}, "X-App-Version": {in[5]}, "X-Region": {in[6]}}
		if i == 1 {
			req.Header["X-Gray-Lane"] = []string{in[8]}
		}
		lanes[i] = serve(h, req).Header().Get(laneSeen)
	}
	if !fuzzRequestLanes[lanes[0]] || lanes[1] != lanes[0] {
		t.Errorf("request %q: lane %q, with a spoofed lane header %q", in, lanes[0], lanes[1])
	}
}

func FuzzRequest(f *testing.F) {
	for _, in := range fuzzRequestSeeds {
		f.Add(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8])
	}
	h := newMark(f, fuzzRequestConfig())
	f.Fuzz(func(t *testing.T, path, query, cookie, user, auth, version, region, remote, spoof string) {
		checkRequest(t, h, [9]string{path, query, cookie, user, auth, version, region, remote, spoof})
	})
}

func TestRequestSeeds(t *testing.T) {
	h := newMark(t, fuzzRequestConfig())
	for _, in := range fuzzRequestSeeds {
		checkRequest(t, h, in)
	}
}

// withVersion returns a configuration with rules and a version source.
func withVersion(rules ...mark.Rule) mark.Config {
	return mark.Config{Version: mark.VersionSource{Header: "X-App-Version"}, Identity: mark.Identity{Header: "X-User-Id"}, Rules: rules}
}

// float returns a pointer to f.
func float(f float64) *float64 {
	return &f
}

// boolPtr returns a pointer to b.
func boolPtr(b bool) *bool {
	return &b
}
