package dispatch_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

func BenchmarkDispatch(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, "ok")
	}))
	defer srv.Close()
	cfg := dispatch.CreateConfig()
	cfg.Lanes["canary"] = laneConfig(srv.URL)
	h := newHandler(b, cfg)

	b.Run("lane", func(b *testing.B) {
		benchmarkLane(b, h, "canary", http.StatusOK)
	})
	b.Run("unknown-next", func(b *testing.B) {
		benchmarkLane(b, h, "blue", http.StatusOK)
	})
	b.Run("no-lane-next", func(b *testing.B) {
		benchmarkLane(b, h, "", http.StatusOK)
	})
}

// benchmarkLane sends b.N GETs with the lane header value to h.
func benchmarkLane(b *testing.B, h http.Handler, laneValue string, want int) {
	req := httptest.NewRequest(http.MethodGet, "http://front.example/bench", nil)
	if laneValue != "" {
		req.Header.Set("X-Gray-Lane", laneValue)
	}
	// Set by Traefik's entry point before any middleware runs.
	req.Header.Set("X-Forwarded-Host", "front.example")
	req.Header.Set("X-Forwarded-Proto", "http")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
