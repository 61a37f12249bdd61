package dispatch_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

// passThrough is a do-nothing middleware. Interpreted by Yaegi, it in front of a compiled
// httputil.ReverseProxy is the floor a lane request is measured against: Traefik with a no-op
// plugin middleware and its own (compiled) load balancer.
type passThrough struct {
	next http.Handler
}

func (p *passThrough) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	p.next.ServeHTTP(rw, req)
}

func BenchmarkDispatch(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, "ok")
	}))
	defer srv.Close()
	cfg := dispatch.CreateConfig()
	cfg.Lanes["canary"] = laneConfig(srv.URL)
	cfg.Lanes["pair"] = laneConfig(srv.URL, srv.URL+"/")
	ownHost := laneConfig(srv.URL)
	ownHost.PassHostHeader = boolp(false)
	cfg.Lanes["own-host"] = ownHost
	h := newHandler(b, cfg)
	target, err := url.Parse(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	floor := httputil.NewSingleHostReverseProxy(target)
	floor.Transport = &http.Transport{MaxIdleConnsPerHost: 200}
	var baseline http.Handler = &passThrough{next: floor}
	var baselineNext http.Handler = &passThrough{next: nextHandler}

	b.Run("baseline-proxy", func(b *testing.B) {
		benchmarkLane(b, baseline, "canary", http.StatusOK)
	})
	b.Run("lane", func(b *testing.B) {
		benchmarkLane(b, h, "canary", http.StatusOK)
	})
	b.Run("lane-two-servers", func(b *testing.B) {
		benchmarkLane(b, h, "pair", http.StatusOK)
	})
	b.Run("lane-pass-host-false", func(b *testing.B) {
		benchmarkLane(b, h, "own-host", http.StatusOK)
	})
	b.Run("lane-mixed-case", func(b *testing.B) {
		benchmarkLane(b, h, " Canary", http.StatusOK)
	})
	b.Run("baseline-next", func(b *testing.B) {
		benchmarkLane(b, baselineNext, "", http.StatusOK)
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
