package dispatch_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

// newBackend starts a server that answers with its name and, in X-Seen-* response headers, what
// it received.
func newBackend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		h := rw.Header()
		h.Set("X-Backend", name)
		h.Set("X-Seen-Host", req.Host)
		h.Set("X-Seen-Path", req.URL.EscapedPath())
		h.Set("X-Seen-Query", req.URL.RawQuery)
		h.Set("X-Seen-Lane", req.Header.Get("X-Gray-Lane"))
		h.Set("X-Seen-For", strings.Join(req.Header.Values("X-Forwarded-For"), "|"))
		h.Set("X-Seen-Proto", strings.Join(req.Header.Values("X-Forwarded-Proto"), "|"))
		h.Set("X-Seen-Fwd-Host", strings.Join(req.Header.Values("X-Forwarded-Host"), "|"))
		if _, ok := req.Header["X-Forwarded-Host"]; !ok {
			h.Set("X-Seen-Fwd-Host", "(absent)")
		}
		body, _ := io.ReadAll(req.Body)
		h.Set("X-Seen-Body", string(body))
		_, _ = io.WriteString(rw, name)
	}))
	closeAndHold(t, srv)
	return srv
}

// heldPorts keeps the addresses of the test servers bound once they are closed, until the test
// binary exits: no later server gets the same URL, and with it the passive health record (kept
// by URL, package-level) of a server an earlier test took down.
var heldPorts []net.Listener

// holdPort binds addr for the rest of the run.
func holdPort(addr string) {
	if ln, err := net.Listen("tcp", addr); err == nil {
		heldPorts = append(heldPorts, ln)
	}
}

// closeAndHold closes srv when the test ends and keeps its port.
func closeAndHold(t testing.TB, srv *httptest.Server) {
	addr := srv.Listener.Addr().String()
	t.Cleanup(func() {
		srv.Close()
		holdPort(addr)
	})
}

// nextHandler stands for the router's own service.
var nextHandler = http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
	rw.Header().Set("X-Backend", "next")
	if req.Body != nil {
		body, _ := io.ReadAll(req.Body)
		rw.Header().Set("X-Seen-Body", string(body))
	}
	_, _ = io.WriteString(rw, "next")
})

// intp returns a pointer to n, for Weight and MaxFails.
func intp(n int) *int { return &n }

// boolp returns a pointer to b, for PassHostHeader.
func boolp(b bool) *bool { return &b }

// laneConfig returns a lane configuration with the given server URLs, weight 1 each.
func laneConfig(urls ...string) dispatch.Lane {
	l := dispatch.Lane{}
	for i := 0; i < len(urls); i++ {
		l.Servers = append(l.Servers, dispatch.Server{URL: urls[i]})
	}
	return l
}

// newHandler builds the middleware or fails the test.
func newHandler(t testing.TB, cfg *dispatch.Config) http.Handler {
	t.Helper()
	h, err := dispatch.New(context.Background(), nextHandler, cfg, "test")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

// serve sends a GET with the given lane header value ("" = none) and returns the recorded response.
func serve(h http.Handler, laneValue string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://front.example/some/path?q=1", nil)
	if laneValue != "" {
		req.Header.Set("X-Gray-Lane", laneValue)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestWeightedRoundRobin(t *testing.T) {
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	tests := []struct {
		name    string
		weights []int
		want    string // backends of the first requests, in order
	}{
		{name: "equal", weights: []int{1, 1, 1}, want: "abcabc"},
		{name: "3:1 smooth", weights: []int{3, 1, 0}, want: "aabaaaba"},
		{name: "1:3 smooth", weights: []int{1, 3, 0}, want: "babbbabb"},
		{name: "5:1:1 smooth", weights: []int{5, 1, 1}, want: "aabacaa"},
		{name: "drained", weights: []int{1, 0, 2}, want: "caccac"},
		{name: "6:2 like 3:1", weights: []int{6, 2, 0}, want: "aabaaaba"},
		{name: "1000:999, too long to precompute", weights: []int{1000, 999, 0}, want: "ababab"},
	}
	urls := []string{a.URL, b.URL, c.URL}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dispatch.CreateConfig()
			l := laneConfig(urls...)
			for i := 0; i < len(l.Servers); i++ {
				l.Servers[i].Weight = intp(tc.weights[i])
			}
			cfg.Lanes["canary"] = l
			h := newHandler(t, cfg)
			got := ""
			for i := 0; i < len(tc.want); i++ {
				got += serve(h, "canary").Header().Get("X-Backend")
			}
			if got != tc.want {
				t.Fatalf("sequence %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWeightedRoundRobinSplit(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	cfg := dispatch.CreateConfig()
	cfg.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{
		{URL: a.URL, Weight: intp(3)},
		{URL: b.URL, Weight: intp(1)},
	}}
	h := newHandler(t, cfg)
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	const workers, each = 8, 50
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go serveCounting(h, each, counts, &mu, &wg)
	}
	wg.Wait()
	if counts["a"] != 300 || counts["b"] != 100 {
		t.Fatalf("split %v, want a:300 b:100", counts)
	}
}

// serveCounting sends n requests of lane canary to h and counts the backends that answered.
func serveCounting(h http.Handler, n int, counts map[string]int, mu *sync.Mutex, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; i < n; i++ {
		backend := serve(h, "canary").Header().Get("X-Backend")
		mu.Lock()
		counts[backend]++
		mu.Unlock()
	}
}

func TestUnknownLane(t *testing.T) {
	a := newBackend(t, "a")
	tests := []struct {
		name        string
		unknownLane string
		laneValue   string
		wantStatus  int
		wantBackend string
	}{
		{name: "lane", unknownLane: "next", laneValue: "canary", wantStatus: 200, wantBackend: "a"},
		{name: "no header next", unknownLane: "next", laneValue: "", wantStatus: 200, wantBackend: "next"},
		{name: "unknown next", unknownLane: "next", laneValue: "blue", wantStatus: 200, wantBackend: "next"},
		{name: "default is next", unknownLane: "", laneValue: "blue", wantStatus: 200, wantBackend: "next"},
		{name: "no header reject", unknownLane: "reject", laneValue: "", wantStatus: 400},
		{name: "unknown reject", unknownLane: "Reject", laneValue: "blue", wantStatus: 400},
		{name: "invalid reject", unknownLane: "reject", laneValue: "-bad lane-", wantStatus: 400},
		{name: "lane reject", unknownLane: "reject", laneValue: "canary", wantStatus: 200, wantBackend: "a"},
		{name: "upper case", unknownLane: "reject", laneValue: "CANARY", wantStatus: 200, wantBackend: "a"},
		{name: "spaces", unknownLane: "reject", laneValue: "  Canary\t", wantStatus: 200, wantBackend: "a"},
		{name: "k8s", unknownLane: "reject", laneValue: "K8S", wantStatus: 200, wantBackend: "a"},
		{name: "Kelvin sign", unknownLane: "reject", laneValue: "\u212A8s", wantStatus: 400},       // strings.ToLower gives k8s
		{name: "dotted capital I", unknownLane: "reject", laneValue: "K\u01308s", wantStatus: 400}, // strings.ToLower gives ki8s
		{name: "non-breaking space", unknownLane: "reject", laneValue: "\u00a0canary", wantStatus: 400},
		{name: "em space", unknownLane: "reject", laneValue: "canary\u2003", wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dispatch.CreateConfig()
			cfg.UnknownLane = tc.unknownLane
			cfg.Lanes["Canary"] = laneConfig(a.URL)
			cfg.Lanes["k8s"] = laneConfig(a.URL)
			cfg.Lanes["ki8s"] = laneConfig(a.URL)
			rec := serve(newHandler(t, cfg), tc.laneValue)
			if rec.Code != tc.wantStatus || rec.Header().Get("X-Backend") != tc.wantBackend {
				t.Fatalf("status %d backend %q, want %d %q", rec.Code, rec.Header().Get("X-Backend"), tc.wantStatus, tc.wantBackend)
			}
		})
	}
}

func TestForwarding(t *testing.T) {
	a := newBackend(t, "a")
	aHost := strings.TrimPrefix(a.URL, "http://")
	tests := []struct {
		name       string
		serverURL  string
		passHost   *bool
		header     string // lane header name
		inPath     string
		inHeaders  map[string]string
		inHost     string // the request's Host when not the URL's host ("" = front.example)
		tls        bool
		noHost     bool // an HTTP/1.0 request without a Host header
		wantHost   string
		wantPath   string
		wantFor    string
		wantProto  string
		wantFwHost string
	}{
		{name: "defaults", serverURL: a.URL, inPath: "/x/y", wantHost: "front.example",
			wantPath: "/x/y", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "front.example"},
		{name: "passHostHeader false", serverURL: a.URL, passHost: boolp(false), inPath: "/x",
			wantHost: aHost, wantPath: "/x", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "front.example"},
		{name: "tls", serverURL: a.URL, passHost: boolp(true), tls: true, inPath: "/",
			wantHost: "front.example", wantPath: "/", wantFor: "192.0.2.1", wantProto: "https", wantFwHost: "front.example"},
		{name: "set by traefik", serverURL: a.URL, inPath: "/",
			inHeaders: map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"},
			wantHost:  "front.example", wantPath: "/", wantFor: "203.0.113.9, 192.0.2.1", wantProto: "https", wantFwHost: "public.example"},
		{name: "path prefix", serverURL: a.URL + "/api", inPath: "/v1/items",
			wantHost: "front.example", wantPath: "/api/v1/items", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "front.example"},
		{name: "path prefix slash", serverURL: a.URL + "/api/", inPath: "/v1/",
			wantHost: "front.example", wantPath: "/api/v1/", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "front.example"},
		{name: "escaped path", serverURL: a.URL + "/api", inPath: "/a%2Fb",
			wantHost: "front.example", wantPath: "/api/a%2Fb", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "front.example"},
		{name: "no Host", serverURL: a.URL, noHost: true, inPath: "/",
			wantHost: aHost, wantPath: "/", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "(absent)"},
		{name: "own header", serverURL: a.URL, header: "X-Lane", inPath: "/",
			wantHost: "front.example", wantPath: "/", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "front.example"},
		// A server's request has no host in its URL: X-Forwarded-Host is the Host header.
		{name: "host header", serverURL: a.URL, inPath: "/", inHost: "client.example",
			wantHost: "client.example", wantPath: "/", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "client.example"},
		// Each of X-Forwarded-Proto and -Host is set when it alone is missing.
		{name: "proto set, host missing", serverURL: a.URL, inPath: "/", inHeaders: map[string]string{"X-Forwarded-Proto": "https"},
			wantHost: "front.example", wantPath: "/", wantFor: "192.0.2.1", wantProto: "https", wantFwHost: "front.example"},
		{name: "host set, proto missing", serverURL: a.URL, inPath: "/", inHeaders: map[string]string{"X-Forwarded-Host": "public.example"},
			wantHost: "front.example", wantPath: "/", wantFor: "192.0.2.1", wantProto: "http", wantFwHost: "public.example"},
		// A WebSocket upgrade (the server here answers 200, not 101) is ws or wss, as Traefik sets it.
		{name: "websocket", serverURL: a.URL, inPath: "/", inHeaders: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"},
			wantHost: "front.example", wantPath: "/", wantFor: "192.0.2.1", wantProto: "ws", wantFwHost: "front.example"},
		{name: "websocket over tls", serverURL: a.URL, tls: true, inPath: "/", inHeaders: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"},
			wantHost: "front.example", wantPath: "/", wantFor: "192.0.2.1", wantProto: "wss", wantFwHost: "front.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dispatch.CreateConfig()
			if tc.header != "" {
				cfg.Header = tc.header
			}
			l := laneConfig(tc.serverURL)
			l.PassHostHeader = tc.passHost
			cfg.Lanes["canary"] = l
			h := newHandler(t, cfg)
			target := "http://front.example" + tc.inPath + "?q=1"
			if tc.tls {
				target = "https://front.example" + tc.inPath + "?q=1"
			}
			req := httptest.NewRequest(http.MethodGet, target, nil)
			if tc.inHost != "" {
				req.Host, req.URL.Host = tc.inHost, ""
			}
			req.Header.Set(cfg.Header, "canary")
			if tc.noHost {
				req.Host = ""
			}
			for k, v := range tc.inHeaders {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header()
			checks := [][3]string{
				{"status", http.StatusText(rec.Code), "OK"},
				{"host", got.Get("X-Seen-Host"), tc.wantHost},
				{"path", got.Get("X-Seen-Path"), tc.wantPath},
				{"query", got.Get("X-Seen-Query"), "q=1"},
				{"X-Forwarded-For", got.Get("X-Seen-For"), tc.wantFor},
				{"X-Forwarded-Proto", got.Get("X-Seen-Proto"), tc.wantProto},
				{"X-Forwarded-Host", got.Get("X-Seen-Fwd-Host"), tc.wantFwHost},
			}
			if tc.header == "" {
				checks = append(checks, [3]string{"lane header", got.Get("X-Seen-Lane"), "canary"})
			}
			for i := 0; i < len(checks); i++ {
				if checks[i][1] != checks[i][2] {
					t.Errorf("%s: %q, want %q", checks[i][0], checks[i][1], checks[i][2])
				}
			}
		})
	}
}

func TestLaneHeaderKept(t *testing.T) {
	a := newBackend(t, "a")
	cfg := dispatch.CreateConfig()
	cfg.Lanes["canary"] = laneConfig(a.URL)
	rec := serve(newHandler(t, cfg), " CANARY ")
	if got := rec.Header().Get("X-Seen-Lane"); got != "CANARY" {
		t.Fatalf("lane header at the server %q", got)
	}
}

func TestServedByHeader(t *testing.T) {
	a := newBackend(t, "a")
	cfg := dispatch.CreateConfig()
	cfg.ServedByHeader = "X-Gray-Upstream"
	cfg.Lanes["canary"] = laneConfig(a.URL)
	rec := serve(newHandler(t, cfg), "canary")
	if got, want := rec.Header().Get("X-Gray-Upstream"), "canary "+a.URL; got != want {
		t.Fatalf("served-by %q, want %q", got, want)
	}
	if got := serve(newHandler(t, cfg), "").Header().Get("X-Gray-Upstream"); got != "" {
		t.Fatalf("served-by %q on the next path", got)
	}
}

// laneHeaderSeeds are the seed inputs of FuzzLaneHeader, also run by TestLaneHeaderSeeds: the lane
// header's first and second values, the Upgrade and Connection headers, and the method.
var laneHeaderSeeds = [][5]string{
	{"canary", "", "", "", "GET"},
	{" Beta\t", "canary", "", "", "HEAD"},
	{"CANARY", "", "websocket", "Upgrade", "GET"},
	{"canary", "", "caf\xc3\xa9", "keep-alive, upgrade", "GET"},
	{"canary", "", "caf\xc3\xa9", "keep-alive", "PUT"},
	{"canary", "", "caf\xc3\xa9", "upgraded", "GET"},
	{"blue", "canary", "", "", "POST"},
	{"", "beta", "", "", "DELETE"},
	{"canary\x00", "", "", "", "OPTIONS"},
	{"b\xc3\xa9ta", "", "", "X-Gray-Lane", "GET"},
	{"\u00a0canary", "", "", "", "GET"}, // only ASCII spaces and tabs are trimmed: an unknown lane
	{"beta\u0085", "", "", "", "GET"},
}

// fuzzMethods are the methods FuzzLaneHeader sends; any other string stands for GET.
var fuzzMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "OPTIONS": true, "PATCH": true}

// checkLaneHeader sends the request the fuzz input in describes through h (lanes canary and beta,
// passive health off, so that inputs do not affect each other): a request whose first lane header
// value, with ASCII spaces and tabs trimmed and lower-cased, names a lane reaches that lane's
// server, unless it asks for an upgrade to a protocol name that is not printable ASCII (400); any
// other reaches next. Header values with control characters are left out: Traefik's HTTP server
// refuses them.
func checkLaneHeader(t testing.TB, h http.Handler, in [5]string) {
	for i := 0; i < 4; i++ {
		for _, c := range []byte(in[i]) {
			if c < ' ' && c != '\t' || c == 0x7f {
				return
			}
		}
	}
	method := in[4]
	if !fuzzMethods[method] {
		method = http.MethodGet
	}
	req := httptest.NewRequest(method, "http://front.example/p", nil)
	req.Header["X-Gray-Lane"] = []string{in[0]}
	if in[1] != "" {
		req.Header["X-Gray-Lane"] = []string{in[0], in[1]}
	}
	if in[2] != "" {
		req.Header["Upgrade"] = []string{in[2]}
	}
	if in[3] != "" {
		req.Header["Connection"] = []string{in[3]}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	// As dispatch reads it: ASCII spaces and tabs trimmed (not strings.TrimSpace's Unicode
	// spaces), ASCII lower-cased (a value that strings.ToLower changes in length is no lane).
	name := strings.Trim(in[0], " \t")
	lane := strings.ToLower(name)
	if len(lane) != len(name) {
		lane = ""
	}
	wantStatus, wantBackend := http.StatusOK, "next"
	if lane == "canary" || lane == "beta" {
		wantBackend = lane
		if hasToken(in[3], "upgrade") && !printable(in[2]) {
			wantStatus, wantBackend = http.StatusBadRequest, ""
		}
	}
	if rec.Code != wantStatus || rec.Header().Get("X-Backend") != wantBackend {
		t.Errorf("request %q: status %d from %q, want %d from %q", in, rec.Code, rec.Header().Get("X-Backend"), wantStatus, wantBackend)
	}
}

// hasToken reports whether the comma-separated list of a Connection header holds token.
func hasToken(list, token string) bool {
	for _, t := range strings.Split(list, ",") {
		if strings.EqualFold(strings.Trim(t, " \t"), token) {
			return true
		}
	}
	return false
}

// printable reports whether s is printable ASCII.
func printable(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// laneHeaderHandler builds the dispatch of FuzzLaneHeader and TestLaneHeaderSeeds.
func laneHeaderHandler(t testing.TB) http.Handler {
	cfg := dispatch.CreateConfig()
	cfg.Lanes["canary"] = laneConfig(newBackend(t, "canary").URL)
	cfg.Lanes["beta"] = laneConfig(newBackend(t, "beta").URL)
	cfg.Health.MaxFails = intp(0)
	return newHandler(t, cfg)
}

func FuzzLaneHeader(f *testing.F) {
	for _, in := range laneHeaderSeeds {
		f.Add(in[0], in[1], in[2], in[3], in[4])
	}
	h := laneHeaderHandler(f)
	f.Fuzz(func(t *testing.T, value, second, upgrade, connection, method string) {
		checkLaneHeader(t, h, [5]string{value, second, upgrade, connection, method})
	})
}

func TestLaneHeaderSeeds(t *testing.T) {
	h := laneHeaderHandler(t)
	for _, in := range laneHeaderSeeds {
		checkLaneHeader(t, h, in)
	}
}
