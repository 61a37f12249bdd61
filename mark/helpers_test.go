package mark_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

// laneSeen is the response header in which the test backend reports the lane header it got
// ("-" when there was none).
const laneSeen = "X-Test-Lane"

// request describes a test request.
type request struct {
	method  string
	target  string // default "/"
	remote  string // default 192.0.2.1:1234
	headers []string
}

// build returns the http.Request r describes; headers are name, value pairs.
func (r request) build() *http.Request {
	target := r.target
	if target == "" {
		target = "/"
	}
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	req := httptest.NewRequest(method, target, nil)
	req.RemoteAddr = "192.0.2.1:1234"
	if r.remote != "" {
		req.RemoteAddr = r.remote
	}
	for i := 0; i+1 < len(r.headers); i += 2 {
		req.Header.Add(r.headers[i], r.headers[i+1])
	}
	return req
}

// backend reports the lane header it receives in the laneSeen response header.
func backend(rw http.ResponseWriter, req *http.Request) {
	values, ok := req.Header["X-Gray-Lane"]
	switch {
	case !ok:
		rw.Header().Set(laneSeen, "-")
	default:
		rw.Header().Set(laneSeen, strings.Join(values, ","))
	}
}

// newMark builds a mark middleware in front of backend, failing the test on error.
func newMark(t testing.TB, cfg *mark.Config) http.Handler {
	t.Helper()
	h, err := mark.New(context.Background(), http.HandlerFunc(backend), cfg, "test")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

// serve sends req through h and returns the recorded response.
func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// laneOf returns the lane header the backend saw for r ("-" when absent).
func laneOf(h http.Handler, r request) string {
	return serve(h, r.build()).Header().Get(laneSeen)
}

// config returns the default configuration with rules.
func config(rules ...mark.Rule) *mark.Config {
	cfg := mark.CreateConfig()
	cfg.Rules = rules
	return cfg
}
