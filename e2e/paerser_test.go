package e2e_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/mitchellh/mapstructure"
	"github.com/traefik/paerser/file"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/config/label"

	"github.com/graylane/graylane"
	"github.com/graylane/graylane/dispatch"
	"github.com/graylane/graylane/mark"
)

// The same configuration in the three syntaxes Traefik users write plugin configuration in:
// the file provider's YAML and TOML, and Docker/Swarm/Consul-catalog style labels.

const paerserYAML = `
http:
  middlewares:
    gray-mark:
      plugin:
        graylane-mark:
          header: X-Lane
          incoming: trustedIPs
          trustedIPs: [10.0.0.0/8, 192.168.0.0/16]
          identity: {header: X-User-Id, cookie: uid}
          version: {query: appVersion}
          anonymous: ip
          stickyCookie: {name: gid, maxAge: 24h, secure: false, sameSite: Strict}
          ruleHeader: X-Gray-Rule
          rules:
            - name: testers
              lane: canary
              users: ["1001", "1002"]
            - name: beta
              lane: beta
              path: {prefix: /beta}
              methods: [GET, HEAD]
              headers: {X-Region: cn-east}
              query: {preview: "true"}
              percent: 12.5
              salt: s1
              until: "2030-01-01T00:00:00Z"
            - name: ramp
              lane: canary
              versions: ">=2.3.0, <3.0.0 || 3.1.x"
              ramp:
                - {at: "2026-12-01T08:00:00Z", percent: 1}
                - {at: "2026-12-02T08:00:00Z", percent: 10}
          defaultLane: stable
    gray-dispatch:
      plugin:
        graylane-dispatch:
          header: X-Lane
          lanes:
            canary:
              servers:
                - url: http://127.0.0.1:8081
                  weight: 3
                - url: http://127.0.0.1:8082
              passHostHeader: false
              fallback: beta
            beta:
              servers:
                - url: http://127.0.0.1:8083
              fallback: none
          unknownLane: reject
          timeouts: {dial: 2s, responseHeader: 30s}
          tls: {rootCAs: [/etc/traefik/ca.pem], serverName: api.internal, insecureSkipVerify: true}
          health: {maxFails: 5, window: 20s}
          servedByHeader: X-Gray-Upstream
          flushInterval: "-1"
    gray:
      plugin:
        graylane:
          mark:
            rules:
              - {name: testers, lane: canary, users: ["1001"]}
          dispatch:
            lanes:
              canary:
                servers: [{url: "http://127.0.0.1:8081", weight: 2}]
`

const paerserTOML = `
[http.middlewares.gray-mark.plugin.graylane-mark]
  header = "X-Lane"
  incoming = "trustedIPs"
  trustedIPs = ["10.0.0.0/8", "192.168.0.0/16"]
  anonymous = "ip"
  ruleHeader = "X-Gray-Rule"
  defaultLane = "stable"
  [http.middlewares.gray-mark.plugin.graylane-mark.identity]
    header = "X-User-Id"
    cookie = "uid"
  [http.middlewares.gray-mark.plugin.graylane-mark.version]
    query = "appVersion"
  [http.middlewares.gray-mark.plugin.graylane-mark.stickyCookie]
    name = "gid"
    maxAge = "24h"
    secure = false
    sameSite = "Strict"
  [[http.middlewares.gray-mark.plugin.graylane-mark.rules]]
    name = "testers"
    lane = "canary"
    users = ["1001", "1002"]
  [[http.middlewares.gray-mark.plugin.graylane-mark.rules]]
    name = "beta"
    lane = "beta"
    methods = ["GET", "HEAD"]
    percent = 12.5
    salt = "s1"
    until = "2030-01-01T00:00:00Z"
    path = { prefix = "/beta" }
    headers = { X-Region = "cn-east" }
    query = { preview = "true" }
  [[http.middlewares.gray-mark.plugin.graylane-mark.rules]]
    name = "ramp"
    lane = "canary"
    versions = ">=2.3.0, <3.0.0 || 3.1.x"
    ramp = [
      { at = "2026-12-01T08:00:00Z", percent = 1 },
      { at = "2026-12-02T08:00:00Z", percent = 10 },
    ]

[http.middlewares.gray-dispatch.plugin.graylane-dispatch]
  header = "X-Lane"
  unknownLane = "reject"
  servedByHeader = "X-Gray-Upstream"
  flushInterval = "-1"
  timeouts = { dial = "2s", responseHeader = "30s" }
  tls = { rootCAs = ["/etc/traefik/ca.pem"], serverName = "api.internal", insecureSkipVerify = true }
  health = { maxFails = 5, window = "20s" }
  [http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary]
    passHostHeader = false
    fallback = "beta"
    [[http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary.servers]]
      url = "http://127.0.0.1:8081"
      weight = 3
    [[http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary.servers]]
      url = "http://127.0.0.1:8082"
  [http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.beta]
    fallback = "none"
    servers = [{ url = "http://127.0.0.1:8083" }]

[http.middlewares.gray.plugin.graylane.mark]
  rules = [{ name = "testers", lane = "canary", users = ["1001"] }]
[http.middlewares.gray.plugin.graylane.dispatch.lanes.canary]
  servers = [{ url = "http://127.0.0.1:8081", weight = 2 }]
`

// paerserLabels spells lists of structs with [i] indexes and lists of strings as one
// comma-separated value, as Traefik's label documentation does.
var paerserLabels = map[string]string{
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.header":                    "X-Lane",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.incoming":                  "trustedIPs",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.trustedIPs":                "10.0.0.0/8,192.168.0.0/16",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.identity.header":           "X-User-Id",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.identity.cookie":           "uid",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.version.query":             "appVersion",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.anonymous":                 "ip",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.stickyCookie.name":         "gid",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.stickyCookie.maxAge":       "24h",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.stickyCookie.secure":       "false",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.stickyCookie.sameSite":     "Strict",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.ruleHeader":                "X-Gray-Rule",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.defaultLane":               "stable",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[0].name":             "testers",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[0].lane":             "canary",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[0].users":            "1001,1002",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].name":             "beta",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].lane":             "beta",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].path.prefix":      "/beta",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].methods":          "GET,HEAD",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].headers.X-Region": "cn-east",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].query.preview":    "true",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].percent":          "12.5",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].salt":             "s1",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[1].until":            "2030-01-01T00:00:00Z",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[2].name":             "ramp",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[2].lane":             "canary",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[2].versions":         ">=2.3.0, <3.0.0 || 3.1.x",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[2].ramp[0].at":       "2026-12-01T08:00:00Z",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[2].ramp[0].percent":  "1",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[2].ramp[1].at":       "2026-12-02T08:00:00Z",
	"traefik.http.middlewares.gray-mark.plugin.graylane-mark.rules[2].ramp[1].percent":  "10",

	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.header":                         "X-Lane",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary.servers[0].url":    "http://127.0.0.1:8081",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary.servers[0].weight": "3",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary.servers[1].url":    "http://127.0.0.1:8082",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary.passHostHeader":    "false",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.canary.fallback":          "beta",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.beta.servers[0].url":      "http://127.0.0.1:8083",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.lanes.beta.fallback":            "none",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.unknownLane":                    "reject",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.timeouts.dial":                  "2s",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.timeouts.responseHeader":        "30s",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.tls.rootCAs[0]":                 "/etc/traefik/ca.pem",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.tls.serverName":                 "api.internal",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.tls.insecureSkipVerify":         "true",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.health.maxFails":                "5",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.health.window":                  "20s",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.servedByHeader":                 "X-Gray-Upstream",
	"traefik.http.middlewares.gray-dispatch.plugin.graylane-dispatch.flushInterval":                  "-1",

	"traefik.http.middlewares.gray.plugin.graylane.mark.rules[0].name":                      "testers",
	"traefik.http.middlewares.gray.plugin.graylane.mark.rules[0].lane":                      "canary",
	"traefik.http.middlewares.gray.plugin.graylane.mark.rules[0].users":                     "1001",
	"traefik.http.middlewares.gray.plugin.graylane.dispatch.lanes.canary.servers[0].url":    "http://127.0.0.1:8081",
	"traefik.http.middlewares.gray.plugin.graylane.dispatch.lanes.canary.servers[0].weight": "2",
}

// decodeLikeTraefik decodes a plugin's raw configuration into its Config the way Traefik's
// Yaegi middleware builder does (pkg/plugins/middlewareyaegi.go, createConfig): onto the
// result of CreateConfig, with mapstructure, weakly typed, comma strings into slices.
func decodeLikeTraefik(t *testing.T, raw map[string]any, result any) {
	t.Helper()
	if err := decodePlugin(raw, result); err != nil {
		t.Fatalf("decode %v: %v", raw, err)
	}
}

// decodePlugin decodes a plugin's configuration map into result as Traefik's plugin builder does.
func decodePlugin(raw map[string]any, result any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.StringToSliceHookFunc(","),
		WeaklyTypedInput: true,
		Result:           result,
	})
	if err != nil {
		return err
	}
	return dec.Decode(raw)
}

// TestPaerserEmptyMap checks what the README says of sticky: {cookie: {}} and of the facade's
// sections without fields (mark: {}): Traefik's file provider turns the empty map into an empty
// string, which the plugin's decoder refuses, while a map with one field decodes.
func TestPaerserEmptyMap(t *testing.T) {
	for _, tc := range []struct {
		alias, plugin, wantErr string
		config                 func() any // the plugin's CreateConfig
	}{
		{"graylane-dispatch", `{lanes: {canary: {servers: [{url: "http://127.0.0.1:8081"}], sticky: {cookie: {}}}}}`,
			"'Lanes[canary].Sticky.Cookie' expected a map, got 'string'", func() any { return dispatch.CreateConfig() }},
		{"graylane-dispatch", `{lanes: {canary: {servers: [{url: "http://127.0.0.1:8081"}], sticky: {cookie: {httpOnly: true}}}}}`,
			"", func() any { return dispatch.CreateConfig() }},
		// The facade's sections: one without fields is refused the same way (write one field).
		{"graylane", `{mark: {}}`, "'Mark' expected a map, got 'string'", func() any { return graylane.CreateConfig() }},
		{"graylane", `{mark: {incoming: strip}, dispatch: {}}`, "'Dispatch' expected a map, got 'string'", func() any { return graylane.CreateConfig() }},
		{"graylane", `{mark: {incoming: strip}}`, "", func() any { return graylane.CreateConfig() }},
	} {
		conf := newDynamic()
		if err := file.DecodeContent(`
http:
  middlewares:
    gray:
      plugin:
        `+tc.alias+`: `+tc.plugin+`
`, ".yaml", conf); err != nil {
			t.Fatalf("YAML: %v", err)
		}
		err := decodePlugin(pluginConf(t, conf, "gray", tc.alias), tc.config())
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s %s: %v", tc.alias, tc.plugin, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s %s: error %v, want %q", tc.alias, tc.plugin, err, tc.wantErr)
		}
	}
}

// decoded is what one syntax gives, as the three compiled Config types.
type decoded struct {
	mark     *mark.Config
	dispatch *dispatch.Config
	facade   *graylane.Config
}

func pluginConf(t *testing.T, conf *dynamic.Configuration, middleware, alias string) map[string]any {
	t.Helper()
	m := conf.HTTP.Middlewares[middleware]
	if m == nil || m.Plugin[alias] == nil {
		t.Fatalf("no plugin %s in middleware %s: %+v", alias, middleware, m)
	}
	return m.Plugin[alias]
}

func decodeAll(t *testing.T, conf *dynamic.Configuration) decoded {
	t.Helper()
	d := decoded{mark: mark.CreateConfig(), dispatch: dispatch.CreateConfig(), facade: graylane.CreateConfig()}
	decodeLikeTraefik(t, pluginConf(t, conf, "gray-mark", "graylane-mark"), d.mark)
	decodeLikeTraefik(t, pluginConf(t, conf, "gray-dispatch", "graylane-dispatch"), d.dispatch)
	decodeLikeTraefik(t, pluginConf(t, conf, "gray", "graylane"), d.facade)
	return d
}

func newDynamic() *dynamic.Configuration {
	return &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{Middlewares: map[string]*dynamic.Middleware{}}}
}

// TestPaerserSyntaxes decodes the same plugin configuration written in YAML, TOML and labels
// with Traefik's own decoders, then into the compiled Config types as Traefik's plugin
// builder does, and checks the three agree with each other and with the intended values.
func TestPaerserSyntaxes(t *testing.T) {
	fromYAML := newDynamic()
	if err := file.DecodeContent(paerserYAML, ".yaml", fromYAML); err != nil {
		t.Fatalf("YAML: %v", err)
	}
	fromTOML := newDynamic()
	if err := file.DecodeContent(paerserTOML, ".toml", fromTOML); err != nil {
		t.Fatalf("TOML: %v", err)
	}
	fromLabels, err := label.DecodeConfiguration(paerserLabels)
	if err != nil {
		t.Fatalf("labels: %v", err)
	}

	want := decoded{mark: wantMark(), dispatch: wantDispatch(), facade: wantFacade()}
	for _, c := range []struct {
		name string
		conf *dynamic.Configuration
	}{{"yaml", fromYAML}, {"toml", fromTOML}, {"labels", fromLabels}} {
		t.Run(c.name, func(t *testing.T) {
			got := decodeAll(t, c.conf)
			if !reflect.DeepEqual(got.mark, want.mark) {
				t.Errorf("mark.Config\n got %+v\nwant %+v", *got.mark, *want.mark)
				diffRules(t, got.mark.Rules, want.mark.Rules)
			}
			if !reflect.DeepEqual(got.dispatch, want.dispatch) {
				t.Errorf("dispatch.Config\n got %+v\nwant %+v", *got.dispatch, *want.dispatch)
			}
			if !reflect.DeepEqual(got.facade, want.facade) {
				t.Errorf("graylane.Config\n got mark %+v dispatch %+v\nwant mark %+v dispatch %+v",
					got.facade.Mark, got.facade.Dispatch, want.facade.Mark, want.facade.Dispatch)
			}
		})
	}
}

func diffRules(t *testing.T, got, want []mark.Rule) {
	t.Helper()
	for i := 0; i < len(got) && i < len(want); i++ {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("rules[%d]\n got %#v\nwant %#v", i, got[i], want[i])
		}
	}
}

func ptr[T any](v T) *T { return &v }

func wantMark() *mark.Config {
	c := mark.CreateConfig()
	c.Header = "X-Lane"
	c.Incoming = "trustedIPs"
	c.TrustedIPs = []string{"10.0.0.0/8", "192.168.0.0/16"}
	c.Identity = mark.Identity{Header: "X-User-Id", Cookie: "uid"}
	c.Version = mark.VersionSource{Query: "appVersion"}
	c.Anonymous = "ip"
	c.StickyCookie.Name = "gid"
	c.StickyCookie.MaxAge = "24h"
	c.StickyCookie.Secure = ptr(false)
	c.StickyCookie.SameSite = "Strict"
	c.RuleHeader = "X-Gray-Rule"
	c.DefaultLane = "stable"
	c.Rules = []mark.Rule{
		{Name: "testers", Lane: "canary", Users: []string{"1001", "1002"}},
		{
			Name: "beta", Lane: "beta",
			Path:    mark.PathMatch{Prefix: "/beta"},
			Methods: []string{"GET", "HEAD"},
			Headers: map[string]string{"X-Region": "cn-east"},
			Query:   map[string]string{"preview": "true"},
			Percent: ptr(12.5), Salt: "s1", Until: "2030-01-01T00:00:00Z",
		},
		{
			Name: "ramp", Lane: "canary", Versions: ">=2.3.0, <3.0.0 || 3.1.x",
			Ramp: []mark.RampStep{{At: "2026-12-01T08:00:00Z", Percent: 1}, {At: "2026-12-02T08:00:00Z", Percent: 10}},
		},
	}
	return c
}

func wantDispatch() *dispatch.Config {
	c := dispatch.CreateConfig()
	c.Header = "X-Lane"
	c.Lanes = map[string]dispatch.Lane{
		"canary": {
			Servers:        []dispatch.Server{{URL: "http://127.0.0.1:8081", Weight: ptr(3)}, {URL: "http://127.0.0.1:8082"}},
			PassHostHeader: ptr(false),
			Fallback:       "beta",
		},
		"beta": {Servers: []dispatch.Server{{URL: "http://127.0.0.1:8083"}}, Fallback: "none"},
	}
	c.UnknownLane = "reject"
	c.Timeouts.Dial = "2s"
	c.Timeouts.ResponseHeader = "30s"
	c.TLS = dispatch.TLS{RootCAs: []string{"/etc/traefik/ca.pem"}, ServerName: "api.internal", InsecureSkipVerify: true}
	c.Health.MaxFails = ptr(5)
	c.Health.Window = "20s"
	c.ServedByHeader = "X-Gray-Upstream"
	c.FlushInterval = "-1"
	return c
}

// wantFacade is the root plugin's configuration: mapstructure allocates each section empty
// (not from the sub-plugin's CreateConfig); New fills the defaults in.
func wantFacade() *graylane.Config {
	return &graylane.Config{
		Mark: &mark.Config{Rules: []mark.Rule{{Name: "testers", Lane: "canary", Users: []string{"1001"}}}},
		Dispatch: &dispatch.Config{Lanes: map[string]dispatch.Lane{
			"canary": {Servers: []dispatch.Server{{URL: "http://127.0.0.1:8081", Weight: ptr(2)}}},
		}},
	}
}
