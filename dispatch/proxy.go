package dispatch

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// statusClientClosedRequest is the status Traefik logs when the client went away first.
const statusClientClosedRequest = 499

// maxTransports bounds the package-level transport table.
const maxTransports = 1024

// transportTimeouts are the parsed Timeouts.
type transportTimeouts struct {
	dial           time.Duration
	responseHeader time.Duration
	idle           time.Duration
}

// parseTimeouts parses the timeouts configuration (with its defaults filled in).
func parseTimeouts(cfg *Timeouts) (transportTimeouts, error) {
	var t transportTimeouts
	var err error
	if t.dial, err = parseDuration(cfg.Dial); err != nil {
		return t, fmt.Errorf("dial: %w", err)
	}
	if t.responseHeader, err = parseDuration(cfg.ResponseHeader); err != nil {
		return t, fmt.Errorf("responseHeader: %w", err)
	}
	if t.idle, err = parseDuration(cfg.Idle); err != nil {
		return t, fmt.Errorf("idle: %w", err)
	}
	return t, nil
}

// transportTable holds the transports shared by every middleware instance, one per server
// address and timeouts, so that the instances Traefik builds on each reload (and never closes)
// reuse the connection pools instead of leaving one idle pool each.
type transportTable struct {
	mu    sync.Mutex
	byKey map[string]*http.Transport
	order []string // keys, oldest first, to evict from when the table is full
}

// transports is the transport table shared by every middleware instance, across reloads.
var transports = &transportTable{byKey: make(map[string]*http.Transport)}

// sharedTransport returns the transport for u's scheme and host with timeouts t, creating it
// when it does not exist yet.
func sharedTransport(u *url.URL, t transportTimeouts) *http.Transport {
	key := fmt.Sprintf("%s://%s %d %d %d", u.Scheme, u.Host, t.dial, t.responseHeader, t.idle)
	transports.mu.Lock()
	defer transports.mu.Unlock()
	if tr := transports.byKey[key]; tr != nil {
		return tr
	}
	if len(transports.order) >= maxTransports {
		// The oldest transport may still serve an old instance: it keeps working, it just no
		// longer keeps idle connections.
		oldest := transports.order[0]
		transports.byKey[oldest].CloseIdleConnections()
		delete(transports.byKey, oldest)
		transports.order = transports.order[1:]
	}
	tr := newTransport(t)
	transports.byKey[key] = tr
	transports.order = append(transports.order, key)
	return tr
}

// newTransport returns an HTTP/1.1 transport with Traefik's defaults and the given timeouts.
func newTransport(t transportTimeouts) *http.Transport {
	dialer := &net.Dialer{Timeout: t.dial, KeepAlive: 15 * time.Second}
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		// Not the method value dialer.DialContext: Yaegi rejects the method value of a compiled type.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost:   200,
		IdleConnTimeout:       t.idle,
		ResponseHeaderTimeout: t.responseHeader,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// newProxy returns the reverse proxy of the server at target. Its Director is the compiled one
// of httputil.NewSingleHostReverseProxy (Yaegi makes every call from compiled code into the plugin
// costly); ModifyResponse and ErrorHandler are plain package functions that find the request's
// state in its context (no closures: Yaegi).
func newProxy(target *url.URL, tr http.RoundTripper, flush time.Duration) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Director:       httputil.NewSingleHostReverseProxy(target).Director,
		Transport:      tr,
		FlushInterval:  flush,
		ModifyResponse: modifyResponse,
		ErrorHandler:   proxyError,
	}
}

// attempt is the state of one request sent to a lane, carried in the request context.
type attempt struct {
	h        *handler
	lane     *lane
	server   *server       // the server being tried
	first    int           // index of the first server tried
	in       *http.Request // the request as the middleware received it
	req      *http.Request // in, with this attempt in its context
	replay   bool          // the request has no body, so it can be sent again
	answered bool          // the server sent its response headers
}

// contextKey is the type of the request context key of the attempt.
type contextKey struct{ name string }

// attemptKey is the request context key of the attempt.
var attemptKey = &contextKey{name: "graylane-dispatch attempt"}

// serveLane sends req to the next server of l, or to l's fallback when none is available.
func (h *handler) serveLane(rw http.ResponseWriter, req *http.Request, l *lane) {
	s := l.balancer.pick(&h.health)
	if s == nil {
		h.serveFallback(rw, req, l)
		return
	}
	a := &attempt{h: h, lane: l, server: s, first: s.index, in: req, replay: req.Body == nil || req.ContentLength == 0}
	a.req = req.WithContext(context.WithValue(req.Context(), attemptKey, a))
	if len(req.Header["X-Forwarded-Host"]) == 0 || len(req.Header["X-Forwarded-Proto"]) == 0 {
		setForwardedHeaders(a.req)
	}
	// The server's proxy points the outgoing request's URL at the server (joining its path
	// prefix) and appends the client to X-Forwarded-For, like Traefik's own proxy.
	if !l.passHost {
		a.req.Host = s.url.Host // a.req is a copy: a fallback still gets the client's Host
	}
	s.proxy.ServeHTTP(rw, a.req)
}

// setForwardedHeaders sets X-Forwarded-Host and X-Forwarded-Proto on req, a copy of the incoming
// request, where they are missing. Behind Traefik they never are: its entry point sets them (and
// X-Forwarded-Port, -Server, X-Real-Ip) before any middleware runs, so they go on unchanged.
func setForwardedHeaders(req *http.Request) {
	req.Header = req.Header.Clone() // leave the incoming request as it was, for the fallback
	if len(req.Header["X-Forwarded-Host"]) == 0 {
		req.Header.Set("X-Forwarded-Host", req.Host)
	}
	if len(req.Header["X-Forwarded-Proto"]) == 0 {
		req.Header.Set("X-Forwarded-Proto", forwardedProto(req))
	}
}

// forwardedProto is X-Forwarded-Proto as Traefik sets it: ws or wss for a WebSocket upgrade,
// else http or https.
func forwardedProto(req *http.Request) string {
	ws := strings.EqualFold(req.Header.Get("Upgrade"), "websocket")
	switch {
	case req.TLS != nil && ws:
		return "wss"
	case req.TLS != nil:
		return "https"
	case ws:
		return "ws"
	}
	return "http"
}

// modifyResponse is the proxies' ModifyResponse, called once the server's response headers
// arrived and before anything is written to the client. A 502, 503 or 504 counts as a failure
// of the server for passive health but is returned to the client as it is, not retried.
func modifyResponse(res *http.Response) error {
	a := res.Request.Context().Value(attemptKey).(*attempt)
	a.answered = true
	switch res.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		a.h.health.fail(a.server)
	}
	if a.h.servedBy != "" {
		res.Header.Set(a.h.servedBy, a.server.servedBy)
	}
	return nil
}

// proxyError is the proxies' ErrorHandler. ReverseProxy calls it when the request failed before
// anything was written to the client: the round trip failed (connection refused, timeout, …), or
// a protocol upgrade the server answered could not be completed. A request without a body goes
// on to the lane's next available server, then to the lane's fallback; any other answers 502
// (504 on a timeout), because its body may have been read.
func proxyError(rw http.ResponseWriter, req *http.Request, err error) {
	a := req.Context().Value(attemptKey).(*attempt)
	if req.Context().Err() != nil {
		rw.WriteHeader(statusClientClosedRequest) // the client went away: not the server's fault
		return
	}
	if a.answered {
		errorLog.printf("lane %s: %s: %v", a.lane.name, a.server.key, err)
		writeError(rw, http.StatusBadGateway)
		return
	}
	a.h.health.fail(a.server)
	if !a.replay {
		writeError(rw, errorStatus(err))
		return
	}
	if next := a.lane.balancer.after(a.server, a.first, &a.h.health); next != nil {
		a.server = next
		if !a.lane.passHost {
			a.req.Host = next.url.Host
		}
		next.proxy.ServeHTTP(rw, a.req)
		return
	}
	a.h.serveFallback(rw, a.in, a.lane)
}

// errorStatus is the status answered for a failed round trip: 504 for a timeout, else 502.
func errorStatus(err error) int {
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// writeError answers status with its text.
func writeError(rw http.ResponseWriter, status int) {
	http.Error(rw, http.StatusText(status), status)
}

// errorLog writes the rare errors of proxyError to standard error, which Traefik shows at error
// level. (ReverseProxy's own messages, such as a response that broke off after its headers were
// sent, go to Go's standard logger: Yaegi cannot hand it a *log.Logger.)
var errorLog = &rareLogger{}

// logInterval is the shortest time between two lines of errorLog.
const logInterval = 10 * time.Second

// rareLogger writes a line at most once per logInterval and counts the lines it drops.
type rareLogger struct {
	mu      sync.Mutex
	last    time.Time
	dropped int
}

// printf writes a line, or drops it when the previous one was written less than logInterval ago.
func (l *rareLogger) printf(format string, args ...interface{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < logInterval {
		l.dropped++
		return
	}
	l.last = now
	msg := fmt.Sprintf(format, args...)
	if l.dropped > 0 {
		msg = fmt.Sprintf("%s (and %d similar errors not logged)", msg, l.dropped)
		l.dropped = 0
	}
	fmt.Fprintln(os.Stderr, "graylane-dispatch: "+msg)
}
