package dispatch_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

// stickyLane returns a lane of the given servers with sticky sessions and the default cookie.
func stickyLane(urls ...string) dispatch.Lane {
	l := laneConfig(urls...)
	l.Sticky = &dispatch.Sticky{}
	return l
}

// sendCookie sends a GET of lane canary with the given Cookie header ("" = none) and returns the
// server that answered and the sticky cookie set on the response ("" = none).
func sendCookie(t *testing.T, h http.Handler, cookie string) (backend, set string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://front.example/", nil)
	req.Header.Set("X-Gray-Lane", "canary")
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	for _, c := range rec.Header().Values("Set-Cookie") {
		if strings.HasPrefix(c, "graylane_server_canary=") {
			set = strings.SplitN(c, ";", 2)[0]
		}
	}
	return rec.Header().Get("X-Backend"), set
}

func TestStickySessions(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	cfg := healthOff()
	cfg.Lanes["canary"] = stickyLane(a.URL, b.URL)
	h := newHandler(t, cfg)

	// Clients without a cookie are spread by the round robin, and each gets its server's cookie.
	cookies := map[string]string{}
	for i := 0; i < 4; i++ {
		backend, set := sendCookie(t, h, "")
		if set == "" {
			t.Fatalf("request %d without a cookie: no sticky cookie set", i)
		}
		if c, seen := cookies[backend]; seen && c != set {
			t.Fatalf("server %s named by two cookies %q and %q", backend, c, set)
		}
		cookies[backend] = set
	}
	if len(cookies) != 2 {
		t.Fatalf("4 clients without a cookie went to %v, want both servers", cookies)
	}
	// A client with a cookie stays on its server, and gets no new cookie.
	for backend, cookie := range cookies {
		for i := 0; i < 5; i++ {
			got, set := sendCookie(t, h, "other=1; "+cookie)
			if got != backend || set != "" {
				t.Fatalf("cookie %q: answered by %s, new cookie %q; want %s and none", cookie, got, set, backend)
			}
		}
	}
	// A cookie that names no server of the lane is replaced.
	if _, set := sendCookie(t, h, "graylane_server_canary=0123456789abcdef"); set == "" {
		t.Fatal("an unknown cookie value was not replaced")
	}
	// A drained server keeps no client: its cookie is replaced by the other server's.
	drained := healthOff()
	drained.Lanes["canary"] = stickyLane(a.URL, b.URL)
	drained.Lanes["canary"].Servers[1].Weight = intp(0)
	if got, set := sendCookie(t, newHandler(t, drained), cookies["b"]); got != "a" || set != cookies["a"] {
		t.Fatalf("cookie of a drained server: answered by %s with cookie %q, want a and %q", got, set, cookies["a"])
	}
	// A lane with one server sets its cookie too, ready for a second server.
	one := healthOff()
	one.Lanes["canary"] = stickyLane(a.URL)
	if got, set := sendCookie(t, newHandler(t, one), ""); got != "a" || set != cookies["a"] {
		t.Fatalf("one server: answered by %s with cookie %q, want a and %q", got, set, cookies["a"])
	}
}

func TestStickyServerDown(t *testing.T) {
	gone := newBackend(t, "gone")
	b := newBackend(t, "b")
	cfg := dispatch.CreateConfig()
	cfg.Health.MaxFails = intp(1)
	cfg.Lanes["canary"] = stickyLane(gone.URL, b.URL)
	h := newHandler(t, cfg)
	cookies := map[string]string{}
	for i := 0; i < 2; i++ {
		backend, set := sendCookie(t, h, "")
		cookies[backend] = set
	}
	if cookies["gone"] == "" || cookies["b"] == "" {
		t.Fatalf("cookies %v, want one for each server", cookies)
	}
	gone.Close()
	// The client's server refuses the connection: the request is retried on b, and the cookie
	// now names b.
	if got, set := sendCookie(t, h, cookies["gone"]); got != "b" || set != cookies["b"] {
		t.Fatalf("server refused: answered by %s with cookie %q, want b and %q", got, set, cookies["b"])
	}
	// The server is down (maxFails 1): its cookie now leads to b at once.
	if got, set := sendCookie(t, h, cookies["gone"]); got != "b" || set != cookies["b"] {
		t.Fatalf("server down: answered by %s with cookie %q, want b and %q", got, set, cookies["b"])
	}
}

// TestStickyServerDownByStatus checks that a client whose cookie names a server that is down
// (by its 503 answers, while it still accepts connections) goes to another server.
func TestStickyServerDownByStatus(t *testing.T) {
	var requests int32
	sick := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Backend", "sick")
		if atomic.AddInt32(&requests, 1) > 1 {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	closeAndHold(t, sick)
	b := newBackend(t, "b")
	cfg := dispatch.CreateConfig()
	cfg.Health = dispatch.Health{MaxFails: intp(1), Window: "10s", Cooldown: "10s"}
	cfg.Lanes["canary"] = stickyLane(sick.URL, b.URL)
	h := newHandler(t, cfg)
	got, cookie := sendCookie(t, h, "")
	if got != "sick" || cookie == "" {
		t.Fatalf("first request: answered by %s with cookie %q, want sick and its cookie", got, cookie)
	}
	for i, want := range []string{"sick 503", "b 200", "b 200"} {
		req := httptest.NewRequest(http.MethodGet, "http://front.example/", nil)
		req.Header.Set("X-Gray-Lane", "canary")
		req.Header.Set("Cookie", cookie)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Header().Get("X-Backend") + " " + strconv.Itoa(rec.Code); got != want {
			t.Fatalf("request %d with sick's cookie: %s, want %s", i, got, want)
		}
	}
}

// TestStickyValueOfEverySpelling checks the sticky cookie value against the README's formula, and
// that every spelling of one server's URL gives the same value: a cookie set by a gateway whose
// configuration writes the URL one way is honoured by one that writes it another way.
func TestStickyValueOfEverySpelling(t *testing.T) {
	a := newBackend(t, "a")
	port := a.Listener.Addr().(*net.TCPAddr).Port
	tests := []struct {
		urls []string
		key  string // the normalised URL hashed into the value
	}{
		{urls: []string{a.URL, a.URL + "/", "HTTP://127.0.0.1:" + strconv.Itoa(port) + "/"}, key: a.URL},
		{urls: []string{"http://LocalHost:" + strconv.Itoa(port), "http://localhost:" + strconv.Itoa(port) + "/"}, key: "http://localhost:" + strconv.Itoa(port)},
		{urls: []string{a.URL + "/app/", " " + a.URL + "/app/ "}, key: a.URL + "/app/"},
	}
	for _, tt := range tests {
		sum := sha256.Sum256([]byte(tt.key))
		want := "graylane_server_canary=" + hex.EncodeToString(sum[:8])
		for _, url := range tt.urls {
			cfg := healthOff()
			cfg.Lanes["canary"] = stickyLane(url)
			if got, set := sendCookie(t, newHandler(t, cfg), ""); got != "a" || set != want {
				t.Errorf("server %q: answered by %q with cookie %q, want a and %q (SHA-256 of %q)", url, got, set, want, tt.key)
			}
		}
	}
}

func TestStickyCookieAttributes(t *testing.T) {
	a := newBackend(t, "a")
	path := "/app"
	cfg := healthOff()
	lane := laneConfig(a.URL)
	lane.Sticky = &dispatch.Sticky{Cookie: dispatch.StickyCookie{Name: "srv", Secure: true, HTTPOnly: true,
		SameSite: "Strict", MaxAge: 3600, Path: &path, Domain: "example.com"}}
	cfg.Lanes["canary"] = lane
	rec := serve(newHandler(t, cfg), "canary")
	got := rec.Header().Get("Set-Cookie")
	if !strings.HasPrefix(got, "srv=") || !strings.HasSuffix(got, "; Path=/app; Domain=example.com; Max-Age=3600; HttpOnly; Secure; SameSite=Strict") {
		t.Fatalf("Set-Cookie %q", got)
	}
}

// TestStickyFallback checks that a sticky lane whose servers cannot take a request sets no cookie
// naming one of them: the fallback lane's server sets its own, and next sets none.
func TestStickyFallback(t *testing.T) {
	b := newBackend(t, "b")
	cfg := healthOff()
	refused := stickyLane(closedURL(t), closedURL(t))
	refused.Fallback = "beta"
	cfg.Lanes["canary"] = refused
	cfg.Lanes["beta"] = stickyLane(b.URL)
	rec := serve(newHandler(t, cfg), "canary")
	cookies := rec.Header().Values("Set-Cookie")
	if rec.Header().Get("X-Backend") != "b" || len(cookies) != 1 || !strings.HasPrefix(cookies[0], "graylane_server_beta=") {
		t.Fatalf("answered by %q with Set-Cookie %q, want b and its beta cookie only", rec.Header().Get("X-Backend"), cookies)
	}
	next := healthOff()
	next.Lanes["canary"] = stickyLane(closedURL(t))
	if rec := serve(newHandler(t, next), "canary"); rec.Header().Get("X-Backend") != "next" || len(rec.Header().Values("Set-Cookie")) != 0 {
		t.Fatalf("answered by %q with Set-Cookie %q, want next and none", rec.Header().Get("X-Backend"), rec.Header().Values("Set-Cookie"))
	}
}

// TestStickyAfterEarlyHints checks that the sticky cookie is on the final response when the server
// sends an interim 103 first (passing it on clears the response headers set before).
func TestStickyAfterEarlyHints(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Link", "</style.css>; rel=preload")
		rw.WriteHeader(http.StatusEarlyHints)
		rw.Header().Set("X-Backend", "hints")
	}))
	closeAndHold(t, srv)
	cfg := healthOff()
	cfg.Lanes["canary"] = stickyLane(srv.URL)
	front := httptest.NewServer(newHandler(t, cfg))
	closeAndHold(t, front)
	res := getLane(t, front.URL) //nolint:bodyclose // getLane closes it at cleanup
	if res.Header.Get("X-Backend") != "hints" || !strings.HasPrefix(res.Header.Get("Set-Cookie"), "graylane_server_canary=") {
		t.Fatalf("final response from %q with Set-Cookie %q, want the sticky cookie", res.Header.Get("X-Backend"), res.Header.Get("Set-Cookie"))
	}
}

func TestStickyResponses(t *testing.T) {
	a := newBackend(t, "a")
	unavailable := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Backend", "unavailable")
		rw.WriteHeader(http.StatusServiceUnavailable)
	}))
	closeAndHold(t, unavailable)
	cfg := healthOff()
	cfg.ServedByHeader = "X-Gray-Upstream"
	cfg.Lanes["canary"] = stickyLane(a.URL)
	cfg.Lanes["beta"] = stickyLane(unavailable.URL)
	h := newHandler(t, cfg)

	// servedByHeader and the cookie, both.
	rec := serve(h, "canary")
	cookie := strings.SplitN(rec.Header().Get("Set-Cookie"), ";", 2)[0]
	if !strings.HasPrefix(cookie, "graylane_server_canary=") || rec.Header().Get("X-Gray-Upstream") != "canary "+a.URL {
		t.Fatalf("Set-Cookie %q, X-Gray-Upstream %q", rec.Header().Get("Set-Cookie"), rec.Header().Get("X-Gray-Upstream"))
	}
	// The first of two cookies of that name counts: a valid one first keeps the client, a
	// garbage one first gives it a new cookie.
	if _, set := sendCookie(t, h, cookie+"; graylane_server_canary=junk"); set != "" {
		t.Fatalf("valid cookie first: new cookie %q", set)
	}
	if _, set := sendCookie(t, h, "graylane_server_canary=junk; "+cookie); set != cookie {
		t.Fatalf("junk cookie first: new cookie %q, want %q", set, cookie)
	}
	// A server answering 503 does not get the client's cookie.
	req := httptest.NewRequest(http.MethodGet, "http://front.example/", nil)
	req.Header.Set("X-Gray-Lane", "beta")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Set-Cookie") != "" {
		t.Fatalf("503: status %d with Set-Cookie %q, want no cookie", rec.Code, rec.Header().Get("Set-Cookie"))
	}
}
