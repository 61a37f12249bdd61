package e2e_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/traefik/traefik/v3/pkg/plugins"

	"github.com/graylane/graylane/e2e/bench"
	"github.com/graylane/graylane/e2e/harness"
)

// BenchmarkTraefikLoaded measures one request through graylane's middlewares loaded by
// Traefik's own plugin loader (pkg/plugins: Yaegi with the standard library symbols), called
// from compiled code as Traefik calls them, with the load benchmark's rule set — next to the
// do-nothing plugin of the load benchmark, the interpreter floor. The next handler is compiled
// and does nothing, so the figures are the middlewares' own cost; the lane requests go to a
// real backend on loopback, and their floor is the do-nothing plugin in front of a compiled
// httputil.ReverseProxy to the same backend (Traefik's own proxy is one).
func BenchmarkTraefikLoaded(b *testing.B) {
	dir := b.TempDir()
	b.Chdir(dir)
	noop := "graylane.test/noopa"
	harness.InstallPlugins(b, dir, map[string]string{noop: filepath.Join(harness.RepoRoot(), "e2e", "bench", "testdata", "noopa")})
	descs := map[string]plugins.LocalDescriptor{"noop": {ModuleName: noop}}
	for alias, module := range localPlugins {
		descs[alias] = plugins.LocalDescriptor{ModuleName: module}
	}
	if err := plugins.SetupLocalPlugins(descs); err != nil {
		b.Fatal(err)
	}
	builder, err := plugins.NewBuilder(nil, nil, descs)
	if err != nil {
		b.Fatal(err)
	}
	backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok\n"))
	}))
	defer backend.Close()
	target, err := url.Parse(backend.URL)
	if err != nil {
		b.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 100}

	rs := bench.Realistic()
	markCfg := map[string]any{"identity": map[string]any{"header": "X-User-Id"}, "rules": rs.Rules}
	lanes := map[string]any{}
	for _, l := range rs.Lanes {
		lanes[l] = map[string]any{"servers": []any{map[string]any{"url": backend.URL}}}
	}
	dispatchCfg := map[string]any{"lanes": lanes}
	facadeCfg := map[string]any{"mark": markCfg, "dispatch": dispatchCfg}
	nothing := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	build := func(alias string, cfg map[string]any, next http.Handler) http.Handler {
		h, err := newHandler(builder, alias, cfg, next)
		if err != nil {
			b.Fatal(err)
		}
		return h
	}
	cases := []struct {
		name, user, lane string
		handler          http.Handler
	}{
		{"do-nothing", rs.MissUser, "", build("noop", map[string]any{}, nothing)},
		{"mark-miss", rs.MissUser, "", build("graylane-mark", markCfg, nothing)},
		{"mark-lane", rs.LaneUser, "", build("graylane-mark", markCfg, nothing)},
		{"dispatch-no-lane", rs.MissUser, "", build("graylane-dispatch", dispatchCfg, nothing)},
		{"facade-miss", rs.MissUser, "", build("graylane", facadeCfg, nothing)},
		{"do-nothing+proxy", rs.MissUser, "", build("noop", map[string]any{}, proxy)},
		{"dispatch-lane", rs.MissUser, rs.LaneName, build("graylane-dispatch", dispatchCfg, nothing)},
		{"facade-lane", rs.LaneUser, "", build("graylane", facadeCfg, nothing)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "http://bench.example"+rs.Path, nil)
			req.Header.Set("X-User-Id", c.user)
			if c.lane != "" {
				req.Header.Set("X-Gray-Lane", c.lane)
			}
			// Set by Traefik's entry point before any middleware runs.
			req.Header.Set("X-Forwarded-Host", "bench.example")
			req.Header.Set("X-Forwarded-Proto", "http")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.handler.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
