package dispatch_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

// FuzzDispatchRequest sends requests built from fuzz input through one dispatch middleware (built
// once per fuzz process) whose lanes send to three servers on 127.0.0.1: one that answers 200
// and records what it received (101 to an upgrade), one that refuses connections, one that
// answers 503. The request is written as an HTTP/1 client would send it and read back with
// http.ReadRequest plus the checks Go's HTTP server adds, so that only requests a server hands to
// Traefik's middlewares reach dispatch. Properties: no panic (http.ErrAbortHandler, which
// ReverseProxy raises when a response body breaks off under an HTTP server, only once the
// response started); exactly one final status, no interim one after it; a status the README
// documents for the situation; a request of no configured lane reaches next as it came (the same
// *http.Request, the same headers); the lane header reaches a lane server as received; no
// internal marker header written; a request with a body reaches the servers at most once, and
// each server at most once; a sticky cookie naming the good server keeps the client there, and
// the good server's response sets its cookie when the request did not carry it first.

// reqFuzzInput is one request of FuzzDispatchRequest. Multi-valued fields hold one header line's
// value per "\n"-separated part; cookies may name the servers' real sticky values as {g} (good),
// {r} (refused) and {5} (503).
type reqFuzzInput struct {
	method, target, host, lanes, cookies, upgrade, connection, contentLength, transferEncoding, extra string
	body                                                                                              []byte
	flags                                                                                             uint8 // 1: HTTP/1.0; 2: no Host line
}

// The flags of reqFuzzInput.
const (
	reqFuzzHTTP10 = 1
	reqFuzzNoHost = 2
)

// reqFuzzSeeds are the seed inputs of FuzzDispatchRequest, also run by TestDispatchRequestSeeds:
// realistic requests and the edge cases of the README.
var reqFuzzSeeds = []reqFuzzInput{
	{method: "GET", target: "/some/path?q=1", host: "front.example", lanes: "weighted"},
	{method: "GET", target: "/", host: "front.example"},
	{method: "GET", target: "/x", host: "front.example", lanes: "blue"},
	{method: "POST", target: "/upload", host: "front.example", lanes: "blue", contentLength: "5", body: []byte("hello")},
	{method: "GET", target: "/a%2Fb?x=%zz", host: "front.example", lanes: " Weighted\t\ncanary"},
	{method: "GET", target: "/", host: "front.example", lanes: "\nweighted"},
	{method: "GET", target: "/", host: "front.example", lanes: "-x"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky", cookies: "graylane_server_sticky={g}"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky", cookies: "graylane_server_sticky={r}"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky", cookies: "graylane_server_sticky={5}"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky", cookies: "graylane_server_sticky={r}; graylane_server_sticky={g}"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky", cookies: "a=1\ngraylane_server_sticky={g}\ngraylane_server_sticky={5}"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky", cookies: "graylane_server_sticky=\"{g}\"; x=\x80"},
	{method: "GET", target: "/", host: "front.example", lanes: "sticky", cookies: "graylane_server_sticky=garbage%00; graylane_server_sticky"},
	{method: "POST", target: "/form", host: "front.example", lanes: "sticky", cookies: "graylane_server_sticky={g}", contentLength: "3", body: []byte("a=b")},
	{method: "POST", target: "/form", host: "front.example", lanes: "fb", contentLength: "3", body: []byte("a=b")},
	{method: "POST", target: "/form", host: "front.example", lanes: "strict", contentLength: "3", body: []byte("a=b")},
	{method: "POST", target: "/", host: "front.example", lanes: "strict"},
	{method: "POST", target: "/", host: "front.example", lanes: "strict", extra: "Idempotency-Key: 42"},
	{method: "PATCH", target: "/", host: "front.example", lanes: "weighted", extra: "X-Idempotency-Key: 42"},
	{method: "PUT", target: "/big", host: "front.example", lanes: "weighted", contentLength: "11", body: []byte("hello world"), extra: "Expect: 100-continue"},
	{method: "PUT", target: "/big", host: "front.example", lanes: "sticky", contentLength: "11", body: []byte("hello world"), extra: "Expect: 100-continue"},
	{method: "POST", target: "/chunks", host: "front.example", lanes: "weighted", transferEncoding: "chunked", body: []byte("5\r\nhello\r\n0\r\n\r\n")},
	{method: "POST", target: "/chunks", host: "front.example", lanes: "fb", transferEncoding: "chunked", body: []byte("5\r\nhel")},
	{method: "POST", target: "/chunks", host: "front.example", lanes: "weighted", transferEncoding: "chunked", body: []byte("zz\r\nhello\r\n0\r\n\r\n")},
	{method: "POST", target: "/short", host: "front.example", lanes: "weighted", contentLength: "10", body: []byte("abc")},
	{method: "POST", target: "/short", host: "front.example", lanes: "fb", contentLength: "10", body: []byte("abc")},
	{method: "POST", target: "/trailer", host: "front.example", lanes: "weighted", transferEncoding: "chunked", body: []byte("1\r\na\r\n0\r\nX-T: 1\r\n\r\n"), extra: "Trailer: X-T\nTE: trailers"},
	{method: "GET", target: "/ws", host: "front.example", lanes: "weighted", upgrade: "websocket", connection: "Upgrade", extra: "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13"},
	{method: "GET", target: "/ws", host: "front.example", lanes: "fb", upgrade: "websocket", connection: "keep-alive, Upgrade"},
	{method: "GET", target: "/ws", host: "front.example", lanes: "strict", upgrade: "websocket", connection: "Upgrade"},
	{method: "GET", target: "/ws", host: "front.example", lanes: "sticky", upgrade: "websocket", connection: "Upgrade", cookies: "graylane_server_sticky={g}"},
	{method: "GET", target: "/ws", host: "front.example", lanes: "weighted", upgrade: "caf\xc3\xa9", connection: "upgrade"},
	{method: "POST", target: "/ws", host: "front.example", lanes: "weighted", upgrade: "websocket", connection: "Upgrade", contentLength: "2", body: []byte("hi")},
	{method: "GET", target: "/ws", host: "front.example", lanes: "weighted", upgrade: "h2c", connection: "Upgrade, HTTP2-Settings", extra: "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"},
	{method: "GET", target: "/", host: "front.example", lanes: "weighted", upgrade: "websocket"},
	{method: "GET", target: "/", host: "front.example", lanes: "weighted", connection: "X-Gray-Lane"},
	{method: "GET", target: "/", host: "front.example", lanes: "weighted", extra: "X-Forwarded-For: 10.0.0.1, garbage\nX-Forwarded-Host: evil.example\nX-Forwarded-Proto: gopher\nX-Forwarded-Port: 99999\nForwarded: for=\"[::1\""},
	{method: "GET", target: "/", host: "front.example", lanes: "weighted", extra: "X-Forwarded-For:\nX-Forwarded-Host:\nX-Forwarded-Proto:"},
	{method: "GET", target: "/", lanes: "weighted", flags: reqFuzzHTTP10 | reqFuzzNoHost},
	{method: "GET", target: "http://other.example/abs?x", host: "front.example", lanes: "weighted"},
	{method: "OPTIONS", target: "*", host: "front.example", lanes: "weighted"},
	{method: "CONNECT", target: "front.example:443", host: "front.example:443", lanes: "weighted"},
	{method: "HEAD", target: "/", host: "front.example", lanes: "strict"},
	{method: "DELETE", target: "/", host: "[::1]:8080", lanes: "fb"},
	{method: "TRACE", target: "/", host: "front.example", lanes: "weighted", extra: "TE: trailers, deflate;q=0.5"},
	{method: "GET", target: "/", host: "front.example", lanes: "weighted", contentLength: "0\n0"},
	{method: "POST", target: "/", host: "front.example", lanes: "weighted", contentLength: "3", transferEncoding: "chunked", body: []byte("3\r\nabc\r\n0\r\n\r\n")},
	{method: "GET", target: "/", host: "front.example", lanes: "WEIGHTED", extra: "Expect: 100-continue"},
	{method: "GET", target: "/", host: "front.example", lanes: "weighted\u212a"},
	{method: "GET", target: "/", host: "front.example", lanes: "we\xffighted"},
	// Found by the fuzzer: a declared trailer that is not a token (400, not the server's fault);
	// an absolute URI of another scheme, which the lane server's HTTP stack refuses (its 400).
	{method: "POST", target: "/trailer", host: "front.example", lanes: "weighted", transferEncoding: "chunked", body: []byte("1\r\na\r\n0\r\nX-T: 1\r\n\r\n"), extra: "Trailer: X\x8f\x8f-T\nTE: trailers"},
	{method: "0", target: "A:0", host: "0", lanes: "weighted", cookies: "0"},
	// Found by the fuzzer: an absolute request target whose host is not IDNA (400, not counted).
	{method: "0", target: "http://o\x96her.example/abs?x", host: "0000000000000", lanes: "weighted", body: []byte("0")},
	{method: "GET", target: "http://o\x96her.example/", host: "front.example", lanes: "sticky"},
}

// reqFuzzSeen is what a server received of one request.
type reqFuzzSeen struct {
	server string
	lanes  []string // the lane header's values
	host   string
}

// reqFuzzNext is the next handler of FuzzDispatchRequest: it records the request it gets.
type reqFuzzNext struct {
	calls  int
	req    *http.Request
	header http.Header // a copy of req.Header on arrival
	body   []byte
	bodyOK bool
}

// ServeHTTP records req and answers 200.
func (n *reqFuzzNext) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	n.calls++
	n.req = req
	n.header = req.Header.Clone()
	n.body = nil
	n.bodyOK = true
	if req.Body != nil {
		body, err := io.ReadAll(req.Body)
		n.body = body
		n.bodyOK = err == nil
	}
	rw.Header().Set("X-Backend", "next")
	_, _ = io.WriteString(rw, "next")
}

// reqFuzzRig is the middleware and servers of FuzzDispatchRequest.
type reqFuzzRig struct {
	h       http.Handler
	next    *reqFuzzNext
	values  map[string]string // the sticky cookie values, by the placeholders {g}, {r}, {5}
	goodURL string
	mu      sync.Mutex
	seen    map[string][]reqFuzzSeen // what the servers received, by X-Fuzz-Id
	ids     int
}

// reqFuzzServer is the *http.Server whose ServerContextKey the requests carry, as under Go's
// HTTP server (ReverseProxy then aborts a broken-off response with http.ErrAbortHandler).
var reqFuzzServer = &http.Server{}

// record notes what the server called name received.
func (r *reqFuzzRig) record(name string, req *http.Request) {
	id := req.Header.Get("X-Fuzz-Id")
	lanes := append([]string(nil), req.Header["X-Gray-Lane"]...)
	r.mu.Lock()
	r.seen[id] = append(r.seen[id], reqFuzzSeen{server: name, lanes: lanes, host: req.Host})
	r.mu.Unlock()
}

// take returns and forgets what the servers received of request id.
func (r *reqFuzzRig) take(id string) []reqFuzzSeen {
	r.mu.Lock()
	seen := r.seen[id]
	delete(r.seen, id)
	r.mu.Unlock()
	return seen
}

// reqFuzzGood is the good server's handler: 101 to an upgrade (then it hangs up), else 200.
type reqFuzzGood struct{ rig *reqFuzzRig }

func (g reqFuzzGood) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	g.rig.record("good", req)
	if up := req.Header.Get("Upgrade"); up != "" && hasToken(strings.Join(req.Header["Connection"], ","), "upgrade") {
		hj, ok := rw.(http.Hijacker)
		if !ok {
			rw.WriteHeader(http.StatusInternalServerError)
			return
		}
		conn, brw, err := hj.Hijack()
		if err != nil {
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + up + "\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_ = conn.Close()
		return
	}
	body, _ := io.ReadAll(req.Body)
	h := rw.Header()
	h.Set("X-Backend", "good")
	h.Set("X-Seen-Lane", strings.Join(req.Header["X-Gray-Lane"], "|"))
	h.Set("X-Seen-Body-Length", strconv.Itoa(len(body)))
	_, _ = io.WriteString(rw, "good")
}

// reqFuzz503 is the handler of the server that answers 503.
type reqFuzz503 struct{ rig *reqFuzzRig }

func (s reqFuzz503) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	s.rig.record("s503", req)
	rw.Header().Set("X-Backend", "s503")
	rw.WriteHeader(http.StatusServiceUnavailable)
}

// reqFuzzStickyValue is the sticky cookie value of the server at url (http://127.0.0.1:port).
func reqFuzzStickyValue(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:8])
}

// reqFuzzLanes are the configured lanes; reqFuzzEndsInNone those whose fallbacks end in none.
var (
	reqFuzzLanes      = map[string]bool{"sticky": true, "weighted": true, "fb": true, "strict": true}
	reqFuzzEndsInNone = map[string]bool{"strict": true}
)

// newReqFuzzRig starts the servers and builds the middleware: lanes sticky (good, refused, 503;
// fallback next), weighted (good 3, 503 1, refused drained), fb (refused; fallback weighted),
// strict (refused, 503; fallback none, passHostHeader false); passive health on, short cooldown.
func newReqFuzzRig(t testing.TB) *reqFuzzRig {
	r := &reqFuzzRig{next: &reqFuzzNext{}, seen: map[string][]reqFuzzSeen{}}
	good := httptest.NewServer(reqFuzzGood{rig: r})
	closeAndHold(t, good)
	unavailable := httptest.NewServer(reqFuzz503{rig: r})
	closeAndHold(t, unavailable)
	refused := closedURL(t)
	r.goodURL = good.URL
	r.values = map[string]string{"{g}": reqFuzzStickyValue(good.URL), "{r}": reqFuzzStickyValue(refused),
		"{5}": reqFuzzStickyValue(unavailable.URL)}

	cfg := dispatch.CreateConfig()
	cfg.ServedByHeader = "X-Gray-Upstream"
	cfg.Timeouts = dispatch.Timeouts{Dial: "1s", ResponseHeader: "5s", Idle: "30s"}
	cfg.Health = dispatch.Health{MaxFails: intp(2), Window: "1s", Cooldown: "100ms"}
	cfg.Lanes["sticky"] = dispatch.Lane{
		Servers: []dispatch.Server{{URL: good.URL}, {URL: refused}, {URL: unavailable.URL}},
		Sticky:  &dispatch.Sticky{Cookie: dispatch.StickyCookie{HTTPOnly: true}},
	}
	cfg.Lanes["weighted"] = dispatch.Lane{Servers: []dispatch.Server{
		{URL: good.URL, Weight: intp(3)}, {URL: unavailable.URL, Weight: intp(1)}, {URL: refused, Weight: intp(0)}}}
	cfg.Lanes["fb"] = dispatch.Lane{Servers: []dispatch.Server{{URL: refused}}, Fallback: "weighted"}
	cfg.Lanes["strict"] = dispatch.Lane{Servers: []dispatch.Server{{URL: refused}, {URL: unavailable.URL}},
		Fallback: "none", PassHostHeader: boolp(false)}
	h, err := dispatch.New(context.Background(), r.next, cfg, "fuzz")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.h = h
	return r
}

// raw writes the request of in as a client sends it, with the header X-Fuzz-Id: id first.
func (in reqFuzzInput) raw(id string, values map[string]string) []byte {
	var b bytes.Buffer
	proto := "HTTP/1.1"
	if in.flags&reqFuzzHTTP10 != 0 {
		proto = "HTTP/1.0"
	}
	b.WriteString(in.method + " " + in.target + " " + proto + "\r\n")
	b.WriteString("X-Fuzz-Id: " + id + "\r\n")
	if in.flags&reqFuzzNoHost == 0 {
		b.WriteString("Host: " + in.host + "\r\n")
	}
	cookies := in.cookies
	for placeholder, value := range values {
		cookies = strings.ReplaceAll(cookies, placeholder, value)
	}
	reqFuzzLines(&b, "X-Gray-Lane: ", in.lanes)
	reqFuzzLines(&b, "Cookie: ", cookies)
	reqFuzzLines(&b, "Upgrade: ", in.upgrade)
	reqFuzzLines(&b, "Connection: ", in.connection)
	reqFuzzLines(&b, "Content-Length: ", in.contentLength)
	reqFuzzLines(&b, "Transfer-Encoding: ", in.transferEncoding)
	reqFuzzLines(&b, "", in.extra)
	b.WriteString("\r\n")
	b.Write(in.body)
	return b.Bytes()
}

// reqFuzzLines writes a header line prefix+part for each "\n"-separated part of values ("" writes
// none; a prefix of "" writes whole lines).
func reqFuzzLines(b *bytes.Buffer, prefix, values string) {
	if values == "" {
		return
	}
	parts := strings.Split(values, "\n")
	for i := 0; i < len(parts); i++ {
		if prefix == "" && parts[i] == "" {
			continue
		}
		b.WriteString(prefix + parts[i] + "\r\n")
	}
}

// reqFuzzRead reads a request as Go's HTTP/1 server does before it calls a handler, or returns
// nil for one the server refuses.
func reqFuzzRead(raw []byte) *http.Request {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil || req.ProtoMajor != 1 {
		return nil
	}
	// ReadRequest drops the Host header, which the server checks: read the header block again.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	if _, err = tp.ReadLine(); err != nil {
		return nil
	}
	header, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil
	}
	hosts := header["Host"]
	if req.ProtoAtLeast(1, 1) && len(hosts) == 0 && req.Method != http.MethodConnect {
		return nil
	}
	if len(hosts) == 1 && !reqFuzzValidHost(hosts[0]) {
		return nil
	}
	for name, values := range req.Header {
		if name == "" || strings.IndexFunc(name, reqFuzzNotToken) >= 0 {
			return nil
		}
		for _, v := range values {
			if !reqFuzzValidValue(v) {
				return nil
			}
		}
	}
	delete(req.Header, "Host")
	if expect := req.Header.Get("Expect"); expect != "" && !hasToken(expect, "100-continue") {
		return nil // 417
	}
	return req
}

// reqFuzzNotToken reports whether r may not appear in a header name.
func reqFuzzNotToken(r rune) bool {
	return r >= 0x80 || !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}

// reqFuzzValidValue reports whether v is a header value Go's server accepts.
func reqFuzzValidValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < ' ' && v[i] != '\t' || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// reqFuzzValidHost reports whether h is a Host header Go's server accepts (httpguts.ValidHostHeader).
func reqFuzzValidHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0) {
			return false
		}
	}
	return true
}

// reqFuzzWriter records what dispatch writes: the recorder gets the final status only (it would
// take an interim 1xx for the final status), the writer counts them.
type reqFuzzWriter struct {
	rec      *httptest.ResponseRecorder
	code     int
	finals   int    // final statuses written (a Write or Flush before any writes 200)
	late     int    // interim statuses after the final one
	leak     string // an internal marker written with a value
	interims int
}

func (w *reqFuzzWriter) Header() http.Header { return w.rec.Header() }

func (w *reqFuzzWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		if w.finals > 0 {
			w.late++
			return
		}
		w.interims++
		reqFuzzMarkers(w, true)
		return
	}
	w.finals++
	if w.finals == 1 {
		w.code = code
		reqFuzzMarkers(w, true)
		w.rec.WriteHeader(code)
	}
}

func (w *reqFuzzWriter) Write(p []byte) (int, error) {
	if w.finals == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.rec.Write(p)
}

func (w *reqFuzzWriter) Flush() {
	if w.finals == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.rec.Flush()
}

// reqFuzzMarkers notes in w.leak an internal marker key among the response headers: one with a
// value when written is true (a writer writes a key once per value), any when it is false.
func reqFuzzMarkers(w *reqFuzzWriter, written bool) {
	for key, values := range w.rec.Header() {
		if strings.Contains(key, " ") || strings.HasPrefix(strings.ToLower(key), "graylane") {
			if !written || len(values) > 0 {
				w.leak = key
			}
		}
	}
}

// reqFuzzServe calls h and returns what it panicked with, and where.
func reqFuzzServe(h http.Handler, w http.ResponseWriter, req *http.Request) (p interface{}, stack string) {
	defer func() {
		if p = recover(); p != nil {
			stack = string(debug.Stack())
		}
	}()
	h.ServeHTTP(w, req)
	return nil, ""
}

// check sends the request of in through the rig's middleware and checks the properties.
func (r *reqFuzzRig) check(t testing.TB, in reqFuzzInput) {
	r.ids++
	id := "f" + strconv.Itoa(r.ids)
	raw := in.raw(id, r.values)
	req := reqFuzzRead(raw)
	if req == nil {
		return // Go's server would answer it itself
	}
	// The body as the servers or next should get it, from a second reading of the request.
	wantReq := reqFuzzRead(raw)
	wantBody, bodyErr := io.ReadAll(wantReq.Body)
	req.RemoteAddr = "192.0.2.1:1234"
	req = req.WithContext(context.WithValue(context.Background(), http.ServerContextKey, reqFuzzServer))
	before := req.Header.Clone()
	hasBody := req.ContentLength != 0 && req.Body != nil && req.Body != http.NoBody
	values := before["X-Gray-Lane"]
	lane := ""
	if len(values) > 0 {
		name := strings.Trim(values[0], " \t")
		if key := strings.ToLower(name); len(key) == len(name) && reqFuzzLanes[key] {
			lane = key
		}
	}
	connection := strings.Join(before["Connection"], ",")
	upType := ""
	if hasToken(connection, "upgrade") {
		upType = before.Get("Upgrade")
	}
	stickyBefore, stickyErr := req.Cookie("graylane_server_sticky")
	host := req.Host

	// Separate assignments: under Yaegi a tuple assignment of nil panics (reflect: New(nil)).
	r.next.calls = 0
	r.next.req = nil
	w := &reqFuzzWriter{rec: httptest.NewRecorder()}
	p, stack := reqFuzzServe(r.h, w, req)
	seen := r.take(id)
	r.take("") // requests whose Connection header dropped X-Fuzz-Id: not counted, not kept
	desc := strconv.Quote(string(raw))
	if p != nil {
		if p == http.ErrAbortHandler && w.finals > 0 {
			return // a response body broke off: the handler is aborted on purpose
		}
		t.Fatalf("request %s: panic %v\n%s", desc, p, stack)
	}
	if w.finals != 1 || w.late != 0 {
		t.Errorf("request %s: %d final statuses (first %d), %d interim ones after", desc, w.finals, w.code, w.late)
	}
	reqFuzzMarkers(w, false)
	if w.leak != "" {
		t.Errorf("request %s: internal header %q in the response", desc, w.leak)
	}
	out := w.rec.Header()
	backend := out.Get("X-Backend")

	if lane == "" {
		if r.next.calls != 1 || r.next.req != req || !reflect.DeepEqual(r.next.header, before) {
			t.Errorf("request %s of no lane: next called %d times, with request %p (sent %p), headers %q (sent %q)",
				desc, r.next.calls, r.next.req, req, r.next.header, before)
		}
		if w.code != http.StatusOK || backend != "next" || len(seen) != 0 || out.Get("X-Gray-Upstream") != "" {
			t.Errorf("request %s of no lane: status %d from %q (served by %q), %d server requests", desc, w.code, backend,
				out.Get("X-Gray-Upstream"), len(seen))
		}
		return
	}

	// The status is one the README documents for the situation.
	badUpgrade := upType != "" && !printable(upType)
	// A declared trailer name that is not a token: Go's transport refuses to send the request.
	badTrailer := false
	for name := range req.Trailer {
		badTrailer = badTrailer || name == "" || strings.IndexFunc(name, reqFuzzNotToken) >= 0
	}
	ok := false
	switch w.code {
	case http.StatusOK:
		ok = backend == "good" || backend == "next"
	case http.StatusServiceUnavailable:
		ok = backend == "s503"
	case http.StatusBadRequest:
		// The client's fault: its body, its upgrade, a declared trailer, a host from an absolute
		// request target that Go's transport cannot write (not IDNA), a CONNECT (Go 1.27).
		ok = bodyErr != nil || badUpgrade || badTrailer || !reqFuzzValidHost(host) || req.Method == http.MethodConnect
	case http.StatusBadGateway:
		ok = reqFuzzEndsInNone[lane] || upType != ""
	}
	// A request target that Go's server passes on but the lane server's HTTP stack refuses ("A:0",
	// an absolute URI of another scheme): that server's own answer goes to the client as it is.
	ok = ok || w.code >= 400 && w.code < 500 && strings.HasPrefix(w.rec.Body.String(), strconv.Itoa(w.code)+" ")
	if !ok {
		t.Errorf("request %s of lane %s: status %d from %q not documented here", desc, lane, w.code, backend)
	}
	if backend == "next" && r.next.calls == 1 && bodyErr == nil && (!r.next.bodyOK || !bytes.Equal(r.next.body, wantBody)) {
		t.Errorf("request %s of lane %s: next got the body %q, want %q", desc, lane, r.next.body, wantBody)
	}

	// What the servers received.
	count := map[string]int{}
	dropsLane := hasToken(connection, "X-Gray-Lane")
	for i := 0; i < len(seen); i++ {
		s := seen[i]
		count[s.server]++
		// (Compared without the blanks around each value, which the lane server's HTTP/1
		// server trims: an obs-fold continuation line leaves one at the end of the value.)
		if !dropsLane && !reflect.DeepEqual(reqFuzzTrimmed(s.lanes), reqFuzzTrimmed(values)) {
			t.Errorf("request %s of lane %s: server %s got lane header %q, want %q", desc, lane, s.server, s.lanes, values)
		}
		// (A host that is not ASCII is sent as IDNA by Go 1.26, refused by Go 1.27: see above.)
		if s.server == "good" && host != "" && reqFuzzValidHost(host) && s.host != host {
			t.Errorf("request %s of lane %s: good server got Host %q, want %q", desc, lane, s.host, host)
		}
	}
	if count["good"] > 1 || count["s503"] > 1 || hasBody && len(seen) > 1 {
		t.Errorf("request %s of lane %s (body %v): sent %v", desc, lane, hasBody, count)
	}

	// A sticky lane's good server keeps its clients and names itself to the others.
	if lane == "sticky" {
		namesGood := stickyErr == nil && stickyBefore.Value == r.values["{g}"]
		if namesGood && upType == "" && len(seen) > 0 && seen[0].server != "good" {
			t.Errorf("request %s: the cookie names the good server, sent to %s", desc, seen[0].server)
		}
		if w.code == http.StatusOK && backend == "good" {
			setsGood := strings.Contains(strings.Join(out["Set-Cookie"], "\n"), "graylane_server_sticky="+r.values["{g}"])
			if setsGood == namesGood {
				t.Errorf("request %s: cookie names the good server %v, response sets it %v (%q)", desc, namesGood, setsGood, out["Set-Cookie"])
			}
		}
	}
}

func FuzzDispatchRequest(f *testing.F) {
	for _, in := range reqFuzzSeeds {
		f.Add(in.method, in.target, in.host, in.lanes, in.cookies, in.upgrade, in.connection, in.contentLength,
			in.transferEncoding, in.extra, in.body, in.flags)
	}
	r := newReqFuzzRig(f)
	f.Fuzz(func(t *testing.T, method, target, host, lanes, cookies, upgrade, connection, contentLength,
		transferEncoding, extra string, body []byte, flags uint8) {
		r.check(t, reqFuzzInput{method: method, target: target, host: host, lanes: lanes, cookies: cookies,
			upgrade: upgrade, connection: connection, contentLength: contentLength, transferEncoding: transferEncoding,
			extra: extra, body: body, flags: flags})
	})
}

func TestDispatchRequestSeeds(t *testing.T) {
	r := newReqFuzzRig(t)
	for _, in := range reqFuzzSeeds {
		r.check(t, in)
	}
}

// reqFuzzTrimmed returns values without the spaces and tabs around each value.
func reqFuzzTrimmed(values []string) []string {
	out := make([]string, len(values))
	for i := 0; i < len(values); i++ {
		out[i] = strings.Trim(values[i], " \t")
	}
	return out
}
