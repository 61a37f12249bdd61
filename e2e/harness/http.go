package harness

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("harness: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Client is the HTTP client of Get and Do: 10-second timeout, no redirects followed.
var Client = &http.Client{
	Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// Get sends a GET request with the given headers ("Host" sets the request's host) and
// returns the status code and the body: a map[string]any when the body is a JSON object
// (as every e2e/cmd/backend answer is), else the body as a string. A transport error fails
// the test.
func Get(tb testing.TB, url string, headers map[string]string) (int, any) {
	tb.Helper()
	r := Do(tb, http.MethodGet, url, headers, nil)
	if r.JSON != nil {
		return r.Status, r.JSON
	}
	return r.Status, string(r.Body)
}

// Reply is a whole HTTP response.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
	// JSON is the body decoded when it is a JSON object, else nil.
	JSON map[string]any
}

// Backend returns the "backend" field of a JSON answer of e2e/cmd/backend, or "".
func (r *Reply) Backend() string {
	s, _ := r.JSON["backend"].(string)
	return s
}

// RequestHeader returns a request header as the backend saw it (from the "headers" field), or "".
func (r *Reply) RequestHeader(name string) string {
	h, _ := r.JSON["headers"].(map[string]any)
	s, _ := h[http.CanonicalHeaderKey(name)].(string)
	return s
}

// Do sends a request (body may be nil) with the given headers ("Host" sets the request's
// host) and reads the whole response. A transport error fails the test.
func Do(tb testing.TB, method, url string, headers map[string]string, body []byte) *Reply {
	tb.Helper()
	r, err := TryDo(method, url, headers, body)
	if err != nil {
		tb.Fatalf("harness: %s %s: %v", method, url, err)
	}
	return r
}

// TryDo is Do returning the error instead of failing the test, for load loops running
// outside the test goroutine.
func TryDo(method, url string, headers map[string]string, body []byte) (*Reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := &Reply{Status: resp.StatusCode, Header: resp.Header, Body: data}
	var obj map[string]any
	if json.Unmarshal(data, &obj) == nil {
		r.JSON = obj
	}
	return r, nil
}
