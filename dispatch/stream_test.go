package dispatch_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/graylane/graylane/dispatch"
)

// streamTimeout bounds every wait of the streaming tests.
const streamTimeout = 5 * time.Second

// newFront starts a real server running the middleware with a lane canary to backend, and
// returns its URL.
func newFront(t *testing.T, backend string, flushInterval string) string {
	t.Helper()
	return newLaneFront(t, laneConfig(backend), flushInterval)
}

// newLaneFront starts a real server running the middleware with l as lane canary (passive health
// off), and returns its URL.
func newLaneFront(t *testing.T, l dispatch.Lane, flushInterval string) string {
	t.Helper()
	cfg := healthOff()
	cfg.FlushInterval = flushInterval
	cfg.Lanes["canary"] = l
	front := httptest.NewServer(newHandler(t, cfg))
	closeAndHold(t, front)
	return front.URL
}

// streamBackend starts a server that writes first, flushes, and writes second only once the
// test closes release (or after streamTimeout).
func streamBackend(t *testing.T, contentType, first, second string, release chan struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", contentType)
		_, _ = io.WriteString(rw, first)
		rw.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(streamTimeout):
		}
		_, _ = io.WriteString(rw, second)
	}))
	closeAndHold(t, srv)
	return srv
}

// getLane sends a GET of lane canary to url.
func getLane(t *testing.T, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Gray-Lane", "canary")
	client := &http.Client{Timeout: streamTimeout}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// readFull reads exactly len(want) bytes from r and compares them with want.
func readFull(t *testing.T, r io.Reader, want string) {
	t.Helper()
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("reading %q: %v", want, err)
	}
	if string(buf) != want {
		t.Fatalf("read %q, want %q", buf, want)
	}
}

func TestStreaming(t *testing.T) {
	tests := []struct {
		name          string
		contentType   string
		flushInterval string
	}{
		// Event streams and responses of unknown length are flushed at once whatever the interval.
		{name: "server-sent events", contentType: "text/event-stream", flushInterval: "100ms"},
		{name: "chunked", contentType: "text/plain", flushInterval: "10s"},
		{name: "chunked flush every write", contentType: "application/octet-stream", flushInterval: "-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			first, second := "data: one\n\n", "data: two\n\n"
			backend := streamBackend(t, tc.contentType, first, second, release)
			res := getLane(t, newFront(t, backend.URL, tc.flushInterval)) //nolint:bodyclose // getLane closes it at cleanup
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
			}
			if len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" {
				t.Fatalf("transfer encoding %v, want chunked", res.TransferEncoding)
			}
			// The first part arrives while the backend still holds the response open.
			readFull(t, res.Body, first)
			close(release)
			rest, err := io.ReadAll(res.Body)
			if err != nil || string(rest) != second {
				t.Fatalf("rest %q, %v", rest, err)
			}
		})
	}
}

func TestLargeUpload(t *testing.T) {
	const size = 20 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		n, err := io.Copy(io.Discard, req.Body)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(rw, strconv.FormatInt(n, 10))
	}))
	closeAndHold(t, srv)
	req, err := http.NewRequest(http.MethodPost, newFront(t, srv.URL, ""), &patternReader{left: size})
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Gray-Lane", "canary")
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != strconv.Itoa(size) {
		t.Fatalf("status %d, the backend counted %q bytes, want %d", res.StatusCode, body, size)
	}
}

// patternReader produces left bytes without holding them in memory, so the upload is streamed.
type patternReader struct{ left int }

// uploadPattern is what patternReader repeats.
var uploadPattern = []byte(strings.Repeat("graylane", 8192))

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	n := copy(p, uploadPattern)
	r.left -= n
	return n, nil
}

// webSocketAccept is the Sec-WebSocket-Accept value for key (RFC 6455).
func webSocketAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// echoWebSocketBackend starts a server that accepts a WebSocket upgrade and then echoes every
// byte it receives. It reports the lane header and X-Forwarded-Proto it saw in the 101 response.
func echoWebSocketBackend(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			http.Error(rw, "not a websocket upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + webSocketAccept(req.Header.Get("Sec-WebSocket-Key")) + "\r\n" +
			"X-Seen-Lane: " + req.Header.Get("X-Gray-Lane") + "\r\n" +
			"X-Seen-Proto: " + req.Header.Get("X-Forwarded-Proto") + "\r\n\r\n")
		if brw.Flush() != nil {
			return
		}
		_ = conn.SetDeadline(time.Now().Add(streamTimeout))
		_, _ = io.Copy(conn, brw)
	}))
	closeAndHold(t, srv)
	return srv
}

func TestWebSocketUpgrade(t *testing.T) {
	echo := echoWebSocketBackend(t).URL
	tests := []struct {
		name    string
		servers []string
	}{
		{name: "one server", servers: []string{echo}},
		{name: "retried after a refused connection", servers: []string{closedURL(t), echo}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			webSocketEcho(t, newLaneFront(t, laneConfig(tc.servers...), ""))
		})
	}
}

// TestWebSocketKeysSpelled checks that the WebSocket handshake headers reach the server spelled as
// RFC 6455 spells them (Sec-WebSocket-Key), as Traefik's proxy sends them, not in Go's canonical
// form (Sec-Websocket-Key): some servers compare them case-sensitively.
func TestWebSocketKeysSpelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	head := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			head <- err.Error()
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(streamTimeout))
		r := bufio.NewReader(conn)
		var lines []string
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
			lines = append(lines, strings.TrimRight(line, "\r\n"))
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		head <- strings.Join(lines, "\n")
	}()
	cfg := healthOff()
	cfg.Lanes["canary"] = laneConfig("http://" + ln.Addr().String())
	req := httptest.NewRequest(http.MethodGet, "http://front.example/chat", nil)
	for _, kv := range [][2]string{{"X-Gray-Lane", "canary"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"},
		{"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}, {"Sec-WebSocket-Version", "13"},
		{"Sec-WebSocket-Protocol", "chat"}, {"Sec-WebSocket-Extensions", "permessage-deflate"}} {
		req.Header.Set(kv[0], kv[1])
	}
	newHandler(t, cfg).ServeHTTP(httptest.NewRecorder(), req)
	got := ""
	select {
	case h := <-head: // not "case got = <-head": Yaegi panics on it (reflect.Select: invalid Dir)
		got = h
	case <-time.After(streamTimeout):
		t.Fatal("the server received no request")
	}
	for _, want := range []string{"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate"} {
		if !strings.Contains(got, "\n"+want) {
			t.Errorf("the server received no line %q in\n%s", want, got)
		}
	}
}

// TestWebSocketFallbackUnchanged checks that a WebSocket request the lane's servers cannot take
// reaches the fallback with its headers as they came (Go's canonical keys): Traefik's proxy, behind
// next, looks them up by those keys.
func TestWebSocketFallbackUnchanged(t *testing.T) {
	cfg := healthOff()
	cfg.Lanes["canary"] = laneConfig(closedURL(t))
	req := httptest.NewRequest(http.MethodGet, "http://front.example/chat", nil)
	for _, kv := range [][2]string{{"X-Gray-Lane", "canary"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"},
		{"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}, {"Sec-WebSocket-Version", "13"}} {
		req.Header.Set(kv[0], kv[1])
	}
	var seen http.Header
	h, err := dispatch.New(context.Background(), http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen = r.Header
	}), cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	h.ServeHTTP(httptest.NewRecorder(), req)
	if seen == nil || seen["Sec-Websocket-Key"] == nil || seen["Sec-Websocket-Version"] == nil || len(seen) != len(req.Header) {
		t.Fatalf("the fallback got the headers %v, want %v", seen, req.Header)
	}
}

// webSocketEcho upgrades a connection to front to a WebSocket of lane canary and checks the echo.
func webSocketEcho(t *testing.T, front string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(front, "http://"), streamTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(streamTimeout))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	_, err = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: front.example\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: "+key+"\r\nX-Gray-Lane: canary\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	res, err := http.ReadResponse(r, nil) //nolint:bodyclose // a 101 has no body; the test closes conn
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != webSocketAccept(key) {
		t.Fatalf("status %d, accept %q", res.StatusCode, res.Header.Get("Sec-WebSocket-Accept"))
	}
	if res.Header.Get("X-Seen-Lane") != "canary" || res.Header.Get("X-Seen-Proto") != "ws" {
		t.Fatalf("the backend saw lane %q, proto %q", res.Header.Get("X-Seen-Lane"), res.Header.Get("X-Seen-Proto"))
	}
	// A masked text frame "hello" (RFC 6455), echoed byte for byte.
	frame := string([]byte{0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1})
	for i := 0; i < 3; i++ {
		if _, err := io.WriteString(conn, frame); err != nil {
			t.Fatal(err)
		}
		readFull(t, r, frame)
	}
}

func TestResponseBrokenOff(t *testing.T) {
	// The server promises 1000 bytes, sends 5 and hangs up. The response has started, so it is
	// neither retried nor answered with a 502: the connection to the client just ends (what was
	// still buffered is lost), and the client sees an error, not a complete response.
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		conn, brw, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nhello")
		_ = brw.Flush()
		conn.Close()
	}))
	closeAndHold(t, srv)
	req, err := http.NewRequest(http.MethodGet, newFront(t, srv.URL, "-1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Gray-Lane", "canary")
	res, err := (&http.Client{Timeout: streamTimeout}).Do(req)
	if err != nil {
		return // the headers were still buffered when the connection ended
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || err == nil {
		t.Fatalf("status %d, body %q, error %v; want 200 and a read error", res.StatusCode, body, err)
	}
}

func TestUpgradeRefusedAfterAnswer(t *testing.T) {
	// The server switches to another protocol than the one asked for: ReverseProxy refuses,
	// after the server answered, so the request is not retried and gets 502.
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Connection", "Upgrade")
		rw.Header().Set("Upgrade", "h2c")
		rw.WriteHeader(http.StatusSwitchingProtocols)
	}))
	closeAndHold(t, srv)
	req, err := http.NewRequest(http.MethodGet, newFront(t, srv.URL, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Gray-Lane", "canary")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	res, err := (&http.Client{Timeout: streamTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", res.StatusCode)
	}
}

func TestUnaskedSwitchNotRetried(t *testing.T) {
	// The server switches protocols although the request did not ask to: refused with 502 after
	// the server answered, so not retried on the lane's other server.
	switcher := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Connection", "Upgrade")
		rw.Header().Set("Upgrade", "h2c")
		rw.WriteHeader(http.StatusSwitchingProtocols)
	}))
	closeAndHold(t, switcher)
	front := newLaneFront(t, laneConfig(switcher.URL, newBackend(t, "good").URL), "")
	req, err := http.NewRequest(http.MethodGet, front, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Gray-Lane", "canary")
	res, err := (&http.Client{Timeout: streamTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Backend") != "" {
		t.Fatalf("status %d from %q, want 502 from none", res.StatusCode, res.Header.Get("X-Backend"))
	}
}
