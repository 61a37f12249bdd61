// Package noopb is a do-nothing Traefik middleware plugin for graylane's benchmarks: it sets
// one request header and calls the next handler. Run by Yaegi in Traefik, it measures what an
// interpreted middleware costs before it does any work (the "interpreter floor").
package noopb

import (
	"context"
	"net/http"
)

// Config is the plugin configuration.
type Config struct {
	// Header is the request header set on every request. Default X-Bench-Noop.
	Header string
	// Value is the header's value. Default b.
	Value string
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config {
	return &Config{Header: "X-Bench-Noop", Value: "b"}
}

type handler struct {
	next   http.Handler
	header string
	value  string
}

// New returns the middleware.
func New(_ context.Context, next http.Handler, config *Config, _ string) (http.Handler, error) {
	return &handler{next: next, header: http.CanonicalHeaderKey(config.Header), value: config.Value}, nil
}

func (h *handler) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	req.Header.Set(h.header, h.value)
	h.next.ServeHTTP(rw, req)
}
