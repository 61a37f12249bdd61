package e2e_test

import (
	"net/http"
	"net/http/httptest"
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
// and does nothing, so the figures are the middlewares' own cost.
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
	rs := bench.Realistic()
	markCfg := map[string]any{"identity": map[string]any{"header": "X-User-Id"}, "rules": rs.Rules}
	dispatchCfg := map[string]any{"lanes": map[string]any{
		"canary": map[string]any{"servers": []any{map[string]any{"url": "http://127.0.0.1:1"}}},
		"beta":   map[string]any{"servers": []any{map[string]any{"url": "http://127.0.0.1:1"}}},
	}}
	nothing := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	build := func(alias string, cfg map[string]any) http.Handler {
		h, err := newHandler(builder, alias, cfg, nothing)
		if err != nil {
			b.Fatal(err)
		}
		return h
	}
	cases := []struct {
		name, user string
		handler    http.Handler
	}{
		{"do-nothing", rs.MissUser, build("noop", map[string]any{})},
		{"mark-miss", rs.MissUser, build("graylane-mark", markCfg)},
		{"mark-lane", rs.LaneUser, build("graylane-mark", markCfg)},
		{"dispatch-no-lane", rs.MissUser, build("graylane-dispatch", dispatchCfg)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "http://bench.example"+rs.Path, nil)
			req.Header.Set("X-User-Id", c.user)
			req.Header.Set("X-Forwarded-Host", "bench.example")
			req.Header.Set("X-Forwarded-Proto", "http")
			rw := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.handler.ServeHTTP(rw, req)
			}
		})
	}
}
