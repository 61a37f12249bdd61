package dispatch_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
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
	benchmarkHealthRecord(b, srv.URL)
}

// benchmarkHealthRecord measures lane requests while the package's health table holds a record
// of another server, as it does for a while after any server failed: every lane then looks
// whether its servers are down. The other server answers its first request 502 (a failure, not
// enough to be down). The record lasts a minute (the health table is emptied once every record
// in it has expired, which a shorter window would let happen during the benchmarks), so these
// benchmarks come last, and with -count above 1 the later rounds of the others measure the path
// that checks health: read them from the first round.
func benchmarkHealthRecord(b *testing.B, url string) {
	var calls int32
	flaky := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if atomic.AddInt32(&calls, 1) == 1 {
			rw.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer flaky.Close()
	cfg := dispatch.CreateConfig()
	cfg.Health.Window = "1m"
	cfg.Lanes["canary"] = laneConfig(url)
	cfg.Lanes["pair"] = laneConfig(url, url+"/")
	cfg.Lanes["flaky"] = laneConfig(flaky.URL)
	h := newHandler(b, cfg)
	flakyReq := httptest.NewRequest(http.MethodGet, "http://front.example/bench", nil)
	flakyReq.Header.Set("X-Gray-Lane", "flaky")
	h.ServeHTTP(httptest.NewRecorder(), flakyReq)

	b.Run("lane-health-record", func(b *testing.B) {
		benchmarkLane(b, h, "canary", http.StatusOK)
	})
	b.Run("lane-two-servers-health-record", func(b *testing.B) {
		benchmarkLane(b, h, "pair", http.StatusOK)
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
