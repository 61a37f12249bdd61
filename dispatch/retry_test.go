package dispatch_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/graylane/graylane/dispatch"
)

// closedURL returns the URL of a server that was started and closed: connecting is refused.
func closedURL(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	addr := srv.Listener.Addr().String()
	srv.Close()
	t.Cleanup(func() { holdPort(addr) })
	return u
}

// statusBackend starts a server that answers every request with status and its name.
func statusBackend(t *testing.T, name string, status int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Backend", name)
		rw.WriteHeader(status)
	}))
	closeAndHold(t, srv)
	return srv
}

// slowBackend starts a server that answers only when the test ends or the request is cancelled.
func slowBackend(t *testing.T) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		select {
		case <-release:
		case <-req.Context().Done():
		}
		rw.Header().Set("X-Backend", "slow")
	}))
	closeAndHold(t, srv)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv
}

// healthOff returns a configuration without passive health checking, so that servers closed by
// one test leave no state behind for the next.
func healthOff() *dispatch.Config {
	cfg := dispatch.CreateConfig()
	cfg.Health.MaxFails = intp(0)
	return cfg
}

// send sends a request with the lane header, body ("" = none) and the other headers given as
// name, value pairs, and returns the response.
func send(h http.Handler, method, laneValue, body string, headers ...string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://front.example/", r)
	req.Header.Set("X-Gray-Lane", laneValue)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRetryOnConnectionRefused(t *testing.T) {
	// A request that could not be sent goes to the next server, whatever its method.
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		good := newBackend(t, "good")
		cfg := healthOff()
		cfg.Lanes["canary"] = laneConfig(closedURL(t), good.URL, closedURL(t))
		h := newHandler(t, cfg)
		for i := 0; i < 12; i++ {
			rec := send(h, method, "canary", "")
			if rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "good" {
				t.Fatalf("%s %d: status %d from %q", method, i, rec.Code, rec.Header().Get("X-Backend"))
			}
		}
	}
}

func TestRetryOnResponseHeaderTimeout(t *testing.T) {
	// The slow server received the request: only an idempotent one without a body is sent again.
	tests := []struct {
		method, body, key string
		want              int
	}{
		{method: http.MethodGet, want: http.StatusOK},
		{method: http.MethodDelete, want: http.StatusOK},
		{method: http.MethodPost, want: http.StatusGatewayTimeout},
		{method: http.MethodPatch, want: http.StatusGatewayTimeout},
		{method: http.MethodPost, key: "Idempotency-Key", want: http.StatusOK},
		{method: http.MethodPost, key: "X-Idempotency-Key", want: http.StatusOK},
		{method: http.MethodPut, body: "payload", want: http.StatusGatewayTimeout},
		{method: http.MethodPost, body: "payload", key: "Idempotency-Key", want: http.StatusGatewayTimeout},
	}
	for _, tt := range tests {
		good := newBackend(t, "good")
		slow := slowBackend(t)
		cfg := healthOff()
		cfg.Timeouts.ResponseHeader = "200ms"
		cfg.Lanes["canary"] = laneConfig(slow.URL, good.URL)
		h := newHandler(t, cfg)
		var key []string
		if tt.key != "" {
			key = []string{tt.key, "k-1"}
		}
		rec := send(h, tt.method, "canary", tt.body, key...)
		if rec.Code != tt.want {
			t.Fatalf("%s with body %q and key %q: status %d from %q, want %d", tt.method, tt.body, tt.key, rec.Code, rec.Header().Get("X-Backend"), tt.want)
		}
	}
}

func TestFallbackNoneStatusAfterRetries(t *testing.T) {
	// With fallback none, a GET tried on every server of its lane is answered as the last server
	// failed: 504 after a timeout, 502 after a refused connection.
	tests := []struct {
		name    string
		servers []string // "slow" (times out) or "closed" (refuses), in the order tried
		want    int
	}{
		{name: "every server timed out", servers: []string{"slow", "slow"}, want: http.StatusGatewayTimeout},
		{name: "refused, then timed out", servers: []string{"closed", "slow"}, want: http.StatusGatewayTimeout},
		{name: "timed out, then refused", servers: []string{"slow", "closed"}, want: http.StatusBadGateway},
		{name: "every server refused", servers: []string{"closed", "closed"}, want: http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := healthOff()
			cfg.Timeouts.ResponseHeader = "100ms"
			cfg.ServedByHeader = "X-Served-By"
			var urls []string
			for _, kind := range tt.servers {
				if kind == "slow" {
					urls = append(urls, slowBackend(t).URL)
				} else {
					urls = append(urls, closedURL(t))
				}
			}
			canary := laneConfig(urls...)
			canary.Fallback = "none"
			cfg.Lanes["canary"] = canary
			rec := send(newHandler(t, cfg), http.MethodGet, "canary", "")
			if rec.Code != tt.want || rec.Header().Get("X-Served-By") != "canary none" {
				t.Fatalf("status %d served by %q, want %d served by %q", rec.Code, rec.Header().Get("X-Served-By"), tt.want, "canary none")
			}
		})
	}
}

func TestFallbackNoneStatusOfAFallbackLane(t *testing.T) {
	// Lane a times out and falls back to lane b, whose fallback is none: b answers for its own
	// servers, 502 when it has none to try (README: 504 only when the lane's own servers were
	// tried and the last one timed out), 504 when its server timed out too.
	tests := []struct {
		name string
		b    func(t *testing.T) dispatch.Server
		want int
	}{
		{name: "b drained", b: func(t *testing.T) dispatch.Server {
			return dispatch.Server{URL: newBackend(t, "b").URL, Weight: intp(0)}
		}, want: http.StatusBadGateway},
		{name: "b refused", b: func(t *testing.T) dispatch.Server { return dispatch.Server{URL: closedURL(t)} }, want: http.StatusBadGateway},
		{name: "b timed out", b: func(t *testing.T) dispatch.Server { return dispatch.Server{URL: slowBackend(t).URL} }, want: http.StatusGatewayTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := healthOff()
			cfg.Timeouts.ResponseHeader = "100ms"
			cfg.ServedByHeader = "X-Served-By"
			a := laneConfig(slowBackend(t).URL)
			a.Fallback = "b"
			cfg.Lanes["a"] = a
			cfg.Lanes["b"] = dispatch.Lane{Servers: []dispatch.Server{tt.b(t)}, Fallback: "none"}
			rec := send(newHandler(t, cfg), http.MethodGet, "a", "")
			if rec.Code != tt.want || rec.Header().Get("X-Served-By") != "b none" {
				t.Fatalf("status %d served by %q, want %d served by %q", rec.Code, rec.Header().Get("X-Served-By"), tt.want, "b none")
			}
		})
	}
}

func TestNoRetryAfterInterimResponse(t *testing.T) {
	// The first server passes a 103 Early Hints on to the client, then hangs up: the client has
	// seen something from it, so the request is not sent to the next server.
	// Nor does the failure count against it (maxFails 1 would take it down).
	hints := earlyHintsThenHangUp(t)
	good := newBackend(t, "good")
	cfg := dispatch.CreateConfig()
	cfg.Health.MaxFails = intp(1)
	cfg.Lanes["canary"] = laneConfig(hints, good.URL)
	front := httptest.NewServer(newHandler(t, cfg))
	closeAndHold(t, front)

	interim := 0
	trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
		interim++
		return nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, front.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Gray-Lane", "canary")
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if interim != 1 || res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Backend") != "" {
		t.Fatalf("%d interim responses, then status %d from %q; want one, then 502 from dispatch", interim, res.StatusCode, res.Header.Get("X-Backend"))
	}
	// Round robin: good, then the server with the hints again, which is not down.
	for i, want := range []int{http.StatusOK, http.StatusBadGateway} {
		if res := getLane(t, front.URL); res.StatusCode != want { //nolint:bodyclose // getLane closes it at cleanup
			t.Fatalf("request %d after the hints: status %d, want %d", i+2, res.StatusCode, want)
		}
	}
}

// earlyHintsThenHangUp starts a server that answers every request with a 103 Early Hints and
// closes the connection.
func earlyHintsThenHangUp(t *testing.T) string {
	return "http://" + rawServer(t, nil, "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n")
}

// rawServer starts a server on a loopback address, which it returns, that reads each request (over
// TLS with config when it is not nil), writes reply onto the TCP connection as it is (inside TLS,
// that is not a TLS record) and closes the connection.
func rawServer(t *testing.T, config *tls.Config, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		holdPort(ln.Addr().String())
	})
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			conn := raw
			if config != nil {
				conn = tls.Server(raw, config)
			}
			if _, err := http.ReadRequest(bufio.NewReader(conn)); err == nil {
				_, _ = io.WriteString(raw, reply)
			}
			raw.Close()
		}
	}()
	return ln.Addr().String()
}

func TestFallbackWhenAllFail(t *testing.T) {
	blue := newBackend(t, "blue")
	tests := []struct {
		name        string
		fallback    string
		method      string
		body        string
		wantStatus  int
		wantBackend string
		wantServed  string
	}{
		{name: "default next", fallback: "", method: "GET", wantStatus: 200, wantBackend: "next", wantServed: "canary next"},
		{name: "next", fallback: "next", method: "HEAD", wantStatus: 200, wantBackend: "next", wantServed: "canary next"},
		{name: "other lane", fallback: "blue", method: "GET", wantStatus: 200, wantBackend: "blue", wantServed: "blue " + blue.URL},
		{name: "none", fallback: "none", method: "GET", wantStatus: 502, wantServed: "canary none"},
		{name: "body never sent", fallback: "next", method: "POST", body: "payload", wantStatus: 200, wantBackend: "next", wantServed: "canary next"},
		{name: "body never sent, to a lane", fallback: "blue", method: "PUT", body: "payload", wantStatus: 200, wantBackend: "blue"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := healthOff()
			cfg.ServedByHeader = "X-Served-By"
			canary := laneConfig(closedURL(t), closedURL(t))
			canary.Fallback = tc.fallback
			cfg.Lanes["canary"] = canary
			cfg.Lanes["blue"] = laneConfig(blue.URL)
			rec := send(newHandler(t, cfg), tc.method, "canary", tc.body)
			if rec.Code != tc.wantStatus || rec.Header().Get("X-Backend") != tc.wantBackend {
				t.Fatalf("status %d from %q, want %d from %q", rec.Code, rec.Header().Get("X-Backend"), tc.wantStatus, tc.wantBackend)
			}
			if rec.Header().Get("X-Seen-Body") != tc.body {
				t.Fatalf("the fallback received the body %q, want %q", rec.Header().Get("X-Seen-Body"), tc.body)
			}
			if tc.wantServed != "" && rec.Header().Get("X-Served-By") != tc.wantServed {
				t.Fatalf("served by %q, want %q", rec.Header().Get("X-Served-By"), tc.wantServed)
			}
			for name := range rec.Header() {
				if strings.Contains(name, " ") {
					t.Fatalf("internal header %q left in the response", name)
				}
			}
		})
	}
}

func TestFallbackWhenDrained(t *testing.T) {
	a := newBackend(t, "a")
	cfg := dispatch.CreateConfig()
	cfg.Lanes["canary"] = dispatch.Lane{
		Servers:  []dispatch.Server{{URL: a.URL, Weight: intp(0)}},
		Fallback: "none",
	}
	// A drained lane takes even a request with a body to its fallback: nothing was sent.
	if rec := send(newHandler(t, cfg), http.MethodPost, "canary", "payload"); rec.Code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502 from fallback none", rec.Code)
	}
	cfg.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: a.URL, Weight: intp(0)}}}
	if rec := send(newHandler(t, cfg), http.MethodPost, "canary", "payload"); rec.Header().Get("X-Backend") != "next" {
		t.Fatalf("served by %q, want next", rec.Header().Get("X-Backend"))
	}
	// A retry skips a drained server too: the request goes to the fallback.
	retried := healthOff()
	retried.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: closedURL(t)}, {URL: a.URL, Weight: intp(0)}}}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		if rec := send(newHandler(t, retried), method, "canary", ""); rec.Header().Get("X-Backend") != "next" {
			t.Fatalf("%s retried: served by %q, want next", method, rec.Header().Get("X-Backend"))
		}
	}
}

func TestBodyIsRetriedOnlyWhenNeverSent(t *testing.T) {
	// A request with a body goes to the next server when no connection could be opened to the
	// first (nothing read the body); once a connection was open, the body may have been sent.
	tests := []struct {
		name       string
		first      func(t *testing.T) string
		wantStatus int
	}{
		{name: "connection refused", first: func(t *testing.T) string { return closedURL(t) }, wantStatus: http.StatusOK},
		{name: "connection closed by the server", first: func(t *testing.T) string { return newHangUpServer(t).url }, wantStatus: http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := newBackend(t, "good")
			cfg := healthOff()
			cfg.Lanes["canary"] = laneConfig(tt.first(t), good.URL)
			h := newHandler(t, cfg)
			// Round robin sends the first request to the failing server, the second to the good one.
			rec := send(h, http.MethodPost, "canary", "payload")
			if rec.Code != tt.wantStatus {
				t.Fatalf("first POST: status %d, want %d", rec.Code, tt.wantStatus)
			}
			if rec.Code == http.StatusOK && rec.Header().Get("X-Seen-Body") != "payload" {
				t.Fatalf("first POST: the next server received the body %q", rec.Header().Get("X-Seen-Body"))
			}
			if rec := send(h, http.MethodPost, "canary", "payload"); rec.Code != http.StatusOK || rec.Header().Get("X-Seen-Body") != "payload" {
				t.Fatalf("second POST: status %d from %q with body %q", rec.Code, rec.Header().Get("X-Backend"), rec.Header().Get("X-Seen-Body"))
			}
		})
	}
}

// badThenGood returns a dispatch middleware with the given passive health whose canary lane has
// two servers: "bad", answering status, then "good".
func badThenGood(t *testing.T, status int, health dispatch.Health) http.Handler {
	t.Helper()
	bad := statusBackend(t, "bad", status)
	good := newBackend(t, "good")
	cfg := dispatch.CreateConfig()
	cfg.Health = health
	cfg.Lanes["canary"] = laneConfig(bad.URL, good.URL)
	return newHandler(t, cfg)
}

func TestPassiveHealth(t *testing.T) {
	h := badThenGood(t, http.StatusServiceUnavailable, dispatch.Health{MaxFails: intp(2), Window: "5s", Cooldown: "2s"})

	// bad, good, bad: the 503s go back to the client as they are; bad is now down.
	got := backendsOf(h, 3)
	if got != "bad good bad" {
		t.Fatalf("before the failures: %q", got)
	}
	if got := backendsOf(h, 6); got != "good good good good good good" {
		t.Fatalf("during the cooldown: %q", got)
	}
	time.Sleep(2050 * time.Millisecond)
	if got := backendsOf(h, 4); !strings.Contains(got, "bad") {
		t.Fatalf("after the cooldown, bad is not tried again: %q", got)
	}
}

func TestPassiveHealthCountedStatuses(t *testing.T) {
	// 502, 503 and 504 answers count against the server; other statuses, 500 included, do not.
	tests := []struct {
		status int
		counts bool
	}{
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
		{http.StatusGatewayTimeout, true},
		{http.StatusInternalServerError, false},
		{http.StatusNotImplemented, false},
		{http.StatusTooManyRequests, false},
		{http.StatusNotFound, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			h := badThenGood(t, tt.status, dispatch.Health{MaxFails: intp(1), Window: "5s", Cooldown: "10s"})
			want := "bad good bad good"
			if tt.counts {
				want = "bad good good good"
			}
			if got := backendsOf(h, 4); got != want {
				t.Fatalf("servers %q, want %q", got, want)
			}
		})
	}
}

func TestClientGoneAway(t *testing.T) {
	// A client that goes away before the response is answered 499 (as Traefik logs it), is not
	// retried, and does not count against the server: with maxFails 1, the server stays up.
	slow := slowBackend(t)
	good := newBackend(t, "good")
	cfg := dispatch.CreateConfig()
	cfg.Health = dispatch.Health{MaxFails: intp(1), Window: "5s", Cooldown: "10s"}
	cfg.Lanes["canary"] = laneConfig(slow.URL, good.URL)
	h := newHandler(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := httptest.NewRequest(http.MethodGet, "http://front.example/", nil).WithContext(ctx)
	req.Header.Set("X-Gray-Lane", "canary")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 499 || rec.Header().Get("X-Backend") != "" || rec.Body.Len() != 0 {
		t.Fatalf("status %d from %q with body %q, want 499 from nobody, without a body", rec.Code, rec.Header().Get("X-Backend"), rec.Body.String())
	}
	// The round robin goes on with good; then the slow server is tried again (not down).
	if got := backendsOf(h, 1); got != "good" {
		t.Fatalf("next request to %q", got)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req.WithContext(ctx2))
	if rec.Code != 499 {
		t.Fatalf("the slow server was skipped after a client went away: status %d from %q", rec.Code, rec.Header().Get("X-Backend"))
	}
}

// TestPassiveHealthSharedByEverySpelling checks that a server's failures count for every
// middleware that sends to it, however its URL is written.
func TestPassiveHealthSharedByEverySpelling(t *testing.T) {
	bad := statusBackend(t, "bad", http.StatusServiceUnavailable)
	good := newBackend(t, "good")
	first := dispatch.CreateConfig()
	first.Health = dispatch.Health{MaxFails: intp(1), Window: "5s", Cooldown: "10s"}
	first.Lanes["canary"] = laneConfig(strings.ToUpper(bad.URL) + "/")
	if got := backendsOf(newHandler(t, first), 1); got != "bad" {
		t.Fatalf("first middleware: %q, want bad", got)
	}
	second := dispatch.CreateConfig()
	second.Lanes["canary"] = laneConfig(bad.URL, good.URL)
	if got := backendsOf(newHandler(t, second), 4); got != "good good good good" {
		t.Fatalf("second middleware, bad down by the first's failure: %q", got)
	}
}

func TestPassiveHealthSlidingWindow(t *testing.T) {
	// maxFails 3 within 1s, a lane of one server that answers 503: the lane answers 502 (its
	// fallback none) once the server is down, 503 while it is up. In the first case the first
	// failure has left the window when the fourth comes, and the last three are within it (850 ms
	// to spare for a slow machine); in the second, only two are ever within it.
	tests := []struct {
		name string
		gaps []time.Duration // pauses before the second, third, … failure
		down bool
	}{
		{name: "three failures within the window", gaps: []time.Duration{900 * time.Millisecond, 150 * time.Millisecond, 0}, down: true},
		{name: "the first failure left the window", gaps: []time.Duration{600 * time.Millisecond, 600 * time.Millisecond}, down: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := statusBackend(t, "bad", http.StatusServiceUnavailable)
			cfg := dispatch.CreateConfig()
			cfg.Health = dispatch.Health{MaxFails: intp(3), Window: "1s", Cooldown: "5s"}
			cfg.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: bad.URL}}, Fallback: "none"}
			h := newHandler(t, cfg)
			if rec := send(h, http.MethodGet, "canary", ""); rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("first request: status %d", rec.Code)
			}
			for _, gap := range tt.gaps {
				time.Sleep(gap)
				if rec := send(h, http.MethodGet, "canary", ""); rec.Code != http.StatusServiceUnavailable {
					t.Fatalf("request after %v: status %d, want 503 from the server", gap, rec.Code)
				}
			}
			want := http.StatusServiceUnavailable
			if tt.down {
				want = http.StatusBadGateway
			}
			if rec := send(h, http.MethodGet, "canary", ""); rec.Code != want {
				t.Fatalf("last request: status %d, want %d", rec.Code, want)
			}
		})
	}
}

// TestPassiveHealthCooldownNotExtended checks that a failure of a request that was sent before
// its server went down does not extend the server's cooldown.
func TestPassiveHealthCooldownNotExtended(t *testing.T) {
	release := make(chan struct{})
	var requests int32
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Backend", "flaky")
		switch atomic.AddInt32(&requests, 1) {
		case 1:
			<-release // in flight while the server goes down, then fails
			rw.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	closeAndHold(t, srv)
	cfg := dispatch.CreateConfig()
	cfg.Health = dispatch.Health{MaxFails: intp(1), Window: "5s", Cooldown: "1s"}
	cfg.Lanes["canary"] = laneConfig(srv.URL)
	h := newHandler(t, cfg)
	inFlight := make(chan int)
	go func() { inFlight <- send(h, http.MethodGet, "canary", "").Code }()
	for atomic.LoadInt32(&requests) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if rec := send(h, http.MethodGet, "canary", ""); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("second request: status %d, want 503 from the server", rec.Code)
	}
	// Down for 1 s from before start. The request in flight fails 600 ms after start: it must
	// not push the end of the cooldown to 1.6 s.
	start := time.Now()
	time.Sleep(600*time.Millisecond - time.Since(start))
	close(release)
	if code := <-inFlight; code != http.StatusServiceUnavailable {
		t.Fatalf("request in flight: status %d, want 503", code)
	}
	time.Sleep(1300*time.Millisecond - time.Since(start))
	if rec := send(h, http.MethodGet, "canary", ""); rec.Header().Get("X-Backend") != "flaky" || rec.Code != http.StatusOK {
		t.Fatalf("after the cooldown: status %d from %q, want 200 from flaky", rec.Code, rec.Header().Get("X-Backend"))
	}
}

// TestPassiveHealthOff checks that a middleware with maxFails 0 counts no failure: another
// middleware that sends to the same server, with passive health on, still sends to it.
func TestPassiveHealthOff(t *testing.T) {
	bad := statusBackend(t, "bad", http.StatusServiceUnavailable)
	good := newBackend(t, "good")
	off := healthOff()
	off.Lanes["canary"] = laneConfig(bad.URL)
	if got := backendsOf(newHandler(t, off), 3); got != "bad bad bad" {
		t.Fatalf("maxFails 0: %q, want bad bad bad", got)
	}
	on := dispatch.CreateConfig()
	on.Health = dispatch.Health{MaxFails: intp(1), Window: "5s", Cooldown: "10s"}
	on.Lanes["canary"] = laneConfig(bad.URL, good.URL)
	if got := backendsOf(newHandler(t, on), 1); got != "bad" {
		t.Fatalf("another middleware after maxFails 0 failures: %q, want bad", got)
	}
}

func TestPassiveHealthKeepsWeights(t *testing.T) {
	// While one of three equal servers is down, the other two share the requests equally.
	bad := statusBackend(t, "bad", http.StatusServiceUnavailable)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	cfg := dispatch.CreateConfig()
	cfg.Health = dispatch.Health{MaxFails: intp(1), Window: "5s", Cooldown: "5s"}
	cfg.Lanes["canary"] = laneConfig(bad.URL, a.URL, b.URL)
	h := newHandler(t, cfg)
	if got := backendsOf(h, 1); got != "bad" {
		t.Fatalf("first request: %q", got)
	}
	counts := map[string]int{}
	for _, name := range strings.Fields(backendsOf(h, 8)) {
		counts[name]++
	}
	if counts["a"] != 4 || counts["b"] != 4 {
		t.Fatalf("while bad is down: %v, want a:4 b:4", counts)
	}
}

// TestHealthRecordsExpire checks that the record of a server that failed once and that no lane
// asks about afterwards (its lane idle, or the server gone from the configuration) stops costing
// the other lanes' requests once it expired: while the health table holds records, every lane
// request takes the path that checks health. Only Yaegi shows the difference in allocations.
// (Records that other tests left in the shared table may make both counts the slow path's.)
func TestHealthRecordsExpire(t *testing.T) {
	cfg := dispatch.CreateConfig()
	cfg.Lanes["canary"] = laneConfig(newBackend(t, "a").URL)
	h := newHandler(t, cfg)
	request := func() { serve(h, "canary") }
	before := testing.AllocsPerRun(50, request)
	other := dispatch.CreateConfig()
	other.Health = dispatch.Health{MaxFails: intp(3), Window: "100ms", Cooldown: "100ms"}
	other.Lanes["x"] = dispatch.Lane{Servers: laneConfig(closedURL(t)).Servers, Fallback: "none"}
	if rec := send(newHandler(t, other), http.MethodGet, "x", ""); rec.Code != http.StatusBadGateway {
		t.Fatalf("request to a closed server: %d, want 502", rec.Code)
	}
	time.Sleep(300 * time.Millisecond) // the record has expired
	for i := 0; i < 1100; i++ {        // more than the lookups between two sweeps of the table
		request()
	}
	if after := testing.AllocsPerRun(50, request); after > before+5 {
		t.Errorf("%v allocations per request after the record expired, %v before the failure", after, before)
	}
}

func TestPassiveHealthConnectionFailure(t *testing.T) {
	good := newBackend(t, "good")
	broken := newHangUpServer(t)
	cfg := dispatch.CreateConfig()
	cfg.Health = dispatch.Health{MaxFails: intp(1), Window: "5s", Cooldown: "2s"}
	cfg.Lanes["canary"] = laneConfig(broken.url, good.URL)
	cfg.Lanes["solo"] = dispatch.Lane{Servers: []dispatch.Server{{URL: broken.url}}, Fallback: "none"}
	h := newHandler(t, cfg)
	if rec := send(h, http.MethodGet, "canary", ""); rec.Header().Get("X-Backend") != "good" {
		t.Fatalf("first GET served by %q", rec.Header().Get("X-Backend"))
	}
	if n := broken.connections(); n != 1 {
		t.Fatalf("%d connections to the broken server, want 1", n)
	}
	// Down: skipped by every lane (health is kept by server URL), so solo takes its fallback.
	for i := 0; i < 4; i++ {
		if got := backendsOf(h, 1); got != "good" {
			t.Fatalf("canary during the cooldown: %q", got)
		}
		if rec := send(h, http.MethodGet, "solo", ""); rec.Code != http.StatusBadGateway {
			t.Fatalf("solo during the cooldown: status %d", rec.Code)
		}
	}
	if n := broken.connections(); n != 1 {
		t.Fatalf("%d connections to the broken server during its cooldown, want 1", n)
	}
	time.Sleep(2050 * time.Millisecond)
	if rec := send(h, http.MethodGet, "solo", ""); rec.Code != http.StatusBadGateway {
		t.Fatalf("solo after the cooldown: status %d", rec.Code)
	}
	if n := broken.connections(); n != 2 {
		t.Fatalf("%d connections to the broken server after its cooldown, want 2", n)
	}
}

// hangUpServer accepts connections and closes them at once, counting them.
type hangUpServer struct {
	url      string
	listener net.Listener
	mu       sync.Mutex
	count    int
}

// newHangUpServer starts a hangUpServer, stopped when the test ends.
func newHangUpServer(t *testing.T) *hangUpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hangUpServer{url: "http://" + ln.Addr().String(), listener: ln}
	go s.serve()
	t.Cleanup(s.stop)
	return s
}

func (s *hangUpServer) serve() {
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.count++
		s.mu.Unlock()
		conn.Close()
	}
}

func (s *hangUpServer) stop() {
	s.listener.Close()
	holdPort(s.listener.Addr().String())
}

func (s *hangUpServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// backendsOf sends n GETs of lane canary to h and returns the backends that answered.
func backendsOf(h http.Handler, n int) string {
	names := make([]string, 0, n)
	for i := 0; i < n; i++ {
		names = append(names, send(h, http.MethodGet, "canary", "").Header().Get("X-Backend"))
	}
	return strings.Join(names, " ")
}

func TestConcurrentRetries(t *testing.T) {
	good1, good2 := newBackend(t, "good"), newBackend(t, "good")
	broken := newHangUpServer(t)
	cfg := dispatch.CreateConfig()
	cfg.Health = dispatch.Health{MaxFails: intp(2), Window: "1s", Cooldown: "20ms"}
	cfg.Lanes["canary"] = laneConfig(closedURL(t), good1.URL, broken.url, good2.URL)
	h := newHandler(t, cfg)
	failures := make(chan string, 400)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go expectGood(h, 50, failures, &wg)
	}
	// Reloads meanwhile build new instances sharing the transports and the health state.
	for i := 0; i < 20; i++ {
		newHandler(t, cfg)
	}
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
}

// expectGood sends n GETs of lane canary to h and reports every answer not from a good backend.
func expectGood(h http.Handler, n int, failures chan<- string, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; i < n; i++ {
		rec := send(h, http.MethodGet, "canary", "")
		if rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "good" {
			failures <- "status " + strconv.Itoa(rec.Code) + " from " + rec.Header().Get("X-Backend")
		}
	}
}

func TestPassHostHeaderOffOnRetryAndFallback(t *testing.T) {
	// The server's host goes to each server tried; the fallback and the caller keep the client's.
	a := newBackend(t, "a")
	next := http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("X-Backend", "next")
		rw.Header().Set("X-Seen-Host", req.Host)
	})
	tests := []struct {
		name        string
		servers     []string
		wantBackend string
		wantHost    string
	}{
		{name: "retried", servers: []string{closedURL(t), a.URL}, wantBackend: "a", wantHost: strings.TrimPrefix(a.URL, "http://")},
		{name: "fallback", servers: []string{closedURL(t)}, wantBackend: "next", wantHost: "front.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := healthOff()
			l := laneConfig(tc.servers...)
			l.PassHostHeader = boolp(false)
			cfg.Lanes["canary"] = l
			h, err := dispatch.New(context.Background(), next, cfg, "test")
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "http://front.example/", nil)
			req.Header.Set("X-Gray-Lane", "canary")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Header().Get("X-Backend") != tc.wantBackend || rec.Header().Get("X-Seen-Host") != tc.wantHost {
				t.Fatalf("%q saw Host %q, want %q saw %q", rec.Header().Get("X-Backend"), rec.Header().Get("X-Seen-Host"), tc.wantBackend, tc.wantHost)
			}
			if req.Host != "front.example" {
				t.Fatalf("the request's Host is %q after the call", req.Host)
			}
		})
	}
}

func TestClientFaultsAreNotTheServers(t *testing.T) {
	// A broken request answers 400 and does not count against the server: with maxFails 1, a
	// request that counted would take the lane's only server down (its fallback none: 502).
	tests := []struct {
		name, raw string
		forwarded bool // Go 1.26 sends it to the server: 200 there
	}{
		{name: "malformed chunked body", raw: "POST / HTTP/1.1\r\nHost: front.example\r\nX-Gray-Lane: canary\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"},
		{name: "upgrade to a protocol name that is not ASCII", raw: "GET / HTTP/1.1\r\nHost: front.example\r\nX-Gray-Lane: canary\r\nConnection: keep-alive, Upgrade\r\nUpgrade: caf\xc3\xa9\r\n\r\n"},
		// Go's server accepts a Trailer header that declares a name that is not a token; Go's
		// transport refuses to send the request (found by FuzzDispatchRequest).
		{name: "trailer declared with a name that is not a token", raw: "POST / HTTP/1.1\r\nHost: front.example\r\nX-Gray-Lane: canary\r\nTransfer-Encoding: chunked\r\nTrailer: X\x8f-T\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n"},
		{name: "GET with such a trailer", raw: "GET / HTTP/1.1\r\nHost: front.example\r\nX-Gray-Lane: canary\r\nTransfer-Encoding: chunked\r\nTrailer: X\x8f-T\r\n\r\n0\r\n\r\n"},
		// An absolute request target whose host is not valid IDNA, which Go's server passes on as
		// the request's Host; Go 1.27's transport fails to write it once connected (found by
		// FuzzDispatchRequest).
		{name: "request host that is not IDNA", raw: "GET http://o\x96her.example/ HTTP/1.1\r\nHost: front.example\r\nX-Gray-Lane: canary\r\n\r\n", forwarded: true},
		// ReverseProxy refuses CONNECT since Go 1.27 (found by FuzzDispatchRequest on Go 1.27.3).
		{name: "CONNECT", raw: "CONNECT front.example:443 HTTP/1.1\r\nHost: front.example:443\r\nX-Gray-Lane: canary\r\n\r\n", forwarded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := newBackend(t, "good")
			cfg := dispatch.CreateConfig()
			cfg.Health = dispatch.Health{MaxFails: intp(1), Window: "10s", Cooldown: "10s"}
			cfg.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: good.URL}}, Fallback: "none"}
			h := newHandler(t, cfg)
			front := httptest.NewServer(h)
			closeAndHold(t, front)
			if status := rawStatus(t, front.URL, tt.raw); status != http.StatusBadRequest && !(tt.forwarded && status == http.StatusOK) {
				t.Fatalf("broken request: status %d, want 400", status)
			}
			if rec := send(h, http.MethodGet, "canary", ""); rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "good" {
				t.Fatalf("next request: status %d from %q, want 200 from good", rec.Code, rec.Header().Get("X-Backend"))
			}
		})
	}
}

// rawStatus sends raw to the server at url over a new connection and returns the status of the
// answer.
func rawStatus(t *testing.T, url, raw string) int {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// switchableBackend starts a server that drops every connection without an answer while failing
// is set, and otherwise answers with X-Backend name.
func switchableBackend(t *testing.T, name string, failing *atomic.Bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			panic(http.ErrAbortHandler)
		}
		rw.Header().Set("X-Backend", name)
	}))
	closeAndHold(t, srv)
	return srv.URL
}

// TestFailuresCounted checks which failures count against a server for passive health: not those
// of the servers a request is retried on, but those of a protocol upgrade. (Each count here takes
// the server down: maxFails 1.)
func TestFailuresCounted(t *testing.T) {
	var aFails, bFails atomic.Bool
	aFails.Store(true)
	bFails.Store(true)
	a, b := switchableBackend(t, "a", &aFails), switchableBackend(t, "b", &bFails)
	config := func(urls ...string) *dispatch.Config {
		cfg := dispatch.CreateConfig()
		cfg.Health.MaxFails = intp(1)
		lane := laneConfig(urls...)
		lane.Fallback = "none"
		cfg.Lanes["canary"] = lane
		return cfg
	}
	// a fails first and goes down; b fails on the retry, which does not count.
	if rec := serve(newHandler(t, config(a, b)), "canary"); rec.Code != http.StatusBadGateway {
		t.Fatalf("both failing: status %d, want 502", rec.Code)
	}
	bFails.Store(false)
	if rec := serve(newHandler(t, config(b)), "canary"); rec.Code != http.StatusOK {
		t.Fatalf("b after failing on a retry: status %d, want 200 (not down)", rec.Code)
	}
	// The first server of a fallback lane is a first server too: its failure counts.
	var cFails atomic.Bool
	cFails.Store(true)
	c := switchableBackend(t, "c", &cFails)
	chain := config(a)
	chain.Lanes["canary"] = dispatch.Lane{Servers: laneConfig(a).Servers, Fallback: "blue"}
	chain.Lanes["blue"] = dispatch.Lane{Servers: laneConfig(c).Servers, Fallback: "none"}
	aFails.Store(false) // a is down already: the request goes straight to blue
	serve(newHandler(t, chain), "canary")
	cFails.Store(false)
	if rec := serve(newHandler(t, config(c)), "canary"); rec.Code != http.StatusBadGateway {
		t.Fatalf("c after failing as the fallback lane's first server: status %d, want 502 (down)", rec.Code)
	}
	// A WebSocket upgrade that the server drops counts like any request: a lane that only serves
	// WebSockets must lose a server that accepts connections and drops them.
	bFails.Store(true)
	only := newHandler(t, config(b))
	upgrade(only)
	bFails.Store(false)
	if rec := serve(only, "canary"); rec.Code != http.StatusBadGateway {
		t.Fatalf("b after a dropped upgrade: status %d, want 502 (down)", rec.Code)
	}
}

// upgrade sends a WebSocket upgrade request of lane canary through h and returns the response.
func upgrade(h http.Handler) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://front.example/", nil)
	req.Header.Set("X-Gray-Lane", "canary")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
