package dispatch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// statusClientClosedRequest is the status Traefik logs when the client went away first.
const statusClientClosedRequest = 499

// newProxy returns the reverse proxy of server s at target. Its Director is the compiled one of
// httputil.NewSingleHostReverseProxy: Yaegi makes every call from compiled code into the plugin
// costly, so a request calls back into the plugin only for its copy buffer (BufferPool's Get and
// Put), once it has a response (ModifyResponse) and on errors (ErrorHandler), the last two bound
// to s here, once.
func newProxy(s *server, target *url.URL, opts *serverOptions) *httputil.ReverseProxy {
	p := &httputil.ReverseProxy{
		Director:       httputil.NewSingleHostReverseProxy(target).Director,
		Transport:      sharedTransport(target, &opts.transport),
		FlushInterval:  opts.flush,
		BufferPool:     buffers,
		ModifyResponse: checkResponse(s), //nolint:bodyclose // ReverseProxy closes the responses it passes
		ErrorHandler:   s.proxyError,
	}
	if s.stickyCookie != nil {
		p.ModifyResponse = stickyResponse(s) //nolint:bodyclose // as above
	} else if s.servedBy != nil {
		p.ModifyResponse = markResponse(s) //nolint:bodyclose // as above
	}
	return p
}

// copyBufferSize is the size of the buffers the proxies copy response bodies through, the size
// ReverseProxy allocates for each response when it has no BufferPool.
const copyBufferSize = 32 << 10

// buffers lends every proxy its copy buffers. Without it, each response would allocate 32 KiB:
// the garbage collector would then run several times more often, and each of its cycles scans
// all of Traefik's heap. Get and Put are calls from compiled code into the plugin, two for every
// response, so they compute as few values as they can: the pool has no fields (an empty receiver
// costs Yaegi no allocation) and the buffers live in a package-level sync.Pool whose New makes
// them, so that Get needs no test.
// (Typed as the interface: Yaegi wraps an interpreted value for compiled code when it is
// assigned to an interface variable, not in a composite literal.)
var buffers httputil.BufferPool = bufferPool{}

// bufferPool is an httputil.BufferPool over freeBuffers.
type bufferPool struct{}

// freeBuffers holds the buffers Put took back.
var freeBuffers = &sync.Pool{New: newBuffer}

// newBuffer makes a buffer of copyBufferSize bytes for freeBuffers.
func newBuffer() interface{} {
	return make([]byte, copyBufferSize)
}

// Get returns a buffer of copyBufferSize bytes. (The comma-ok assertion into the named result:
// Yaegi then writes the buffer straight into it, not into a value of its own first.)
func (bufferPool) Get() (b []byte) {
	b, _ = freeBuffers.Get().([]byte)
	return b
}

// Put takes back a buffer that Get gave: ReverseProxy puts back only those.
func (bufferPool) Put(b []byte) {
	// The slice itself, not a pointer to it: compiled, that allocates its header for the
	// interface, but under Yaegi &b costs a frame slot (an allocation) just as well, and
	// dereferencing it in Get one more.
	freeBuffers.Put(b) //nolint:staticcheck // SA6002: see above
}

// retryMark is the response header key of a request's state while a server's proxy runs (see
// serveLane). serveLane removes it as soon as the proxy returns. A key with spaces is no valid
// header name: no server can send it. retriedMark, without a value, is there while a retry runs
// (see countsAgainstServer).
const (
	retryMark   = "graylane dispatch retry"
	retriedMark = "graylane dispatch retried"
)

// pendingMark is the value of retryMark while a server's proxy runs; retryValue and
// retryAfterTimeout are the ones with which proxyError asks for a retry, the second when the
// round trip timed out (so that a lane whose servers all time out answers 504 with fallback none).
var (
	pendingMark       = []string{}
	retryValue        = []string{"1"}
	retryAfterTimeout = []string{"timeout"}
)

// prepare returns a copy of req for the lane's servers when req needs more than the proxy does:
// X-Forwarded-Host and X-Forwarded-Proto where they are missing; for a protocol upgrade, the
// WebSocket headers spelled as RFC 6455 does (see webSocketKeys); for a protocol upgrade or a
// request with a body, the state that proxyError reads (see requestState); for a request with a
// body, a body that the proxy and the transport cannot close, so that when the request was never
// sent (no connection, a failed TLS handshake, refused by the transport) it can go to another
// server (the server that received the request closes the body once the handler returns).
// Behind Traefik the headers are never
// missing: its entry point sets them (and X-Forwarded-Port, -Server, X-Real-Ip) before any
// middleware runs, so they go on unchanged; but for a request without a Host (HTTP/1.0), which
// gets no X-Forwarded-Host there or here. The incoming request is left as it was: the copy
// goes to the lane's servers, retries and fallbacks, and a fallback takes the incoming request
// back for an upgrade (see asReceived).
func prepare(req *http.Request) *http.Request {
	ctx := req.Context()
	hasBody := req.Body != nil && req.ContentLength != 0
	var state *requestState
	if req.Header["Upgrade"] != nil || hasBody {
		state = &requestState{badUpgrade: badUpgrade(req), original: req}
		ctx = context.WithValue(ctx, stateKey, state)
	}
	out := req.WithContext(ctx)
	if hasBody {
		state.body = http.MaxBytesReader(nil, req.Body, math.MaxInt64)
		out.Body = io.NopCloser(state.body)
	}
	missing := len(req.Header["X-Forwarded-Host"]) == 0 || len(req.Header["X-Forwarded-Proto"]) == 0
	if missing || req.Header["Upgrade"] != nil {
		out.Header = req.Header.Clone()
		spellWebSocketKeys(out.Header)
	}
	if missing {
		if len(out.Header["X-Forwarded-Host"]) == 0 && req.Host != "" {
			out.Header.Set("X-Forwarded-Host", req.Host)
		}
		if len(out.Header["X-Forwarded-Proto"]) == 0 {
			out.Header.Set("X-Forwarded-Proto", forwardedProto(req))
		}
	}
	return out
}

// webSocketKeys pairs the keys of the WebSocket handshake headers as Go stores them with their
// spelling in RFC 6455. Header names are case-insensitive, but some WebSocket servers compare
// them case-sensitively: Traefik's own proxy sends the RFC's spelling, and so does dispatch.
var webSocketKeys = [][2]string{
	{"Sec-Websocket-Key", "Sec-WebSocket-Key"},
	{"Sec-Websocket-Extensions", "Sec-WebSocket-Extensions"},
	{"Sec-Websocket-Accept", "Sec-WebSocket-Accept"},
	{"Sec-Websocket-Protocol", "Sec-WebSocket-Protocol"},
	{"Sec-Websocket-Version", "Sec-WebSocket-Version"},
}

// spellWebSocketKeys gives the WebSocket handshake headers of h the spelling of RFC 6455. Go's
// transport writes a header key as it is stored, so the server receives that spelling.
func spellWebSocketKeys(h http.Header) {
	for _, keys := range webSocketKeys {
		if values, ok := h[keys[0]]; ok {
			delete(h, keys[0])
			h[keys[1]] = values
		}
	}
}

// badUpgrade reports whether req asks for a protocol upgrade to a name that is not printable
// ASCII, which ReverseProxy refuses before it connects to any server: the client's fault, which
// proxyError answers 400 rather than counting it against the lane's servers.
func badUpgrade(req *http.Request) bool {
	name := req.Header.Get("Upgrade")
	for i := 0; i < len(name); i++ {
		if name[i] < ' ' || name[i] > '~' {
			return asksUpgrade(req)
		}
	}
	return false
}

// asksUpgrade reports whether the Connection header of req lists "upgrade".
func asksUpgrade(req *http.Request) bool {
	for _, value := range req.Header["Connection"] {
		for _, token := range strings.Split(value, ",") {
			if strings.EqualFold(strings.TrimSpace(token), "upgrade") {
				return true
			}
		}
	}
	return false
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

// requestState is the state of a request that asks for a protocol upgrade or has a body,
// carried in its context.
type requestState struct {
	answered   bool      // the server switched protocols: a failure now is not retried
	badUpgrade bool      // the protocol asked for is one ReverseProxy refuses (see badUpgrade)
	body       io.Reader // the body sent, for a request with one (see clientFault)
	// original is the request prepare copied, which a fallback gets back (see asReceived).
	original *http.Request
}

// asReceived returns the request that req, a protocol upgrade, was prepared from, for the
// fallback: the prepared copy spells the WebSocket headers as RFC 6455 does, and Traefik's own
// proxy, behind next, looks them up by Go's canonical keys.
func asReceived(req *http.Request) *http.Request {
	if state := stateOf(req); state != nil {
		return state.original
	}
	return req
}

// contextKey is the type of the request context key of the request state.
type contextKey struct{ name string }

// stateKey is the request context key of the request state.
var stateKey = &contextKey{name: "graylane-dispatch request"}

// stateOf returns the state prepare gave req (or the request it was copied from), or nil.
func stateOf(req *http.Request) *requestState {
	state, _ := req.Context().Value(stateKey).(*requestState)
	return state
}

// errUnaskedSwitch refuses a 101 answer to a request that did not ask for an upgrade.
var errUnaskedSwitch = errors.New("server switched protocols without being asked to")

// checkResponse returns the ModifyResponse of s's proxy, called once the server's response
// headers arrived and before anything is written to the client. It passes the rare statuses to
// unusualResponse. A closure over s rather than a method value: under Yaegi the receiver would
// cost one more allocation per call, and it runs for every response.
func checkResponse(s *server) func(*http.Response) error {
	return func(res *http.Response) error {
		if unusualStatus[res.StatusCode] {
			return unusualResponse(s, res)
		}
		return nil
	}
}

// markResponse returns the ModifyResponse of s's proxy when servedByHeader is set: checkResponse's,
// which also names the lane and server in the response. (Two functions rather than a test of the
// setting: under Yaegi every value a function computes costs an allocation per call.)
func markResponse(s *server) func(*http.Response) error {
	return func(res *http.Response) error {
		res.Header[s.servedByKey] = s.servedBy
		if unusualStatus[res.StatusCode] {
			return unusualResponse(s, res)
		}
		return nil
	}
}

// unusualStatus holds the statuses that the ModifyResponse functions pass to unusualResponse: a
// map lookup costs less under Yaegi than comparisons.
var unusualStatus = map[int]bool{
	http.StatusSwitchingProtocols: true,
	http.StatusBadGateway:         true,
	http.StatusServiceUnavailable: true,
	http.StatusGatewayTimeout:     true,
}

// unusualResponse handles the statuses ModifyResponse does not pass on as they are. A 502, 503 or
// 504 counts as a failure of the server for passive health but goes to the client as it is, not
// retried. A 101 (Switching Protocols) marks the upgrade as answered, so that a failure to
// complete it is not retried either.
func unusualResponse(s *server, res *http.Response) error {
	if res.StatusCode != http.StatusSwitchingProtocols {
		fail(s)
		return nil
	}
	u := stateOf(res.Request)
	if u == nil {
		return errUnaskedSwitch
	}
	u.answered = true
	return nil
}

// proxyError is the ErrorHandler of s's proxy. ReverseProxy calls it when the request failed
// before anything was written to the client: the round trip failed (connection refused, timeout,
// …), or a protocol upgrade the server answered could not be completed. A request that may be
// sent again (see replayable) is retried by serveLane (on the lane's next available server, then
// the lane's fallback); any other answers 502 (504 on a timeout).
func (s *server) proxyError(rw http.ResponseWriter, req *http.Request, err error) {
	if req.Context().Err() != nil {
		rw.WriteHeader(statusClientClosedRequest) // the client went away: not the server's fault
		return
	}
	if clientFault(req) || invalidRequest(err) {
		writeError(rw, http.StatusBadRequest) // not the server's fault
		return
	}
	if answered(rw, req, err) {
		logRarely(errorLog, "lane %s: %s: %v", s.lane, s.key, err)
		writeError(rw, http.StatusBadGateway)
		return
	}
	// The error is classified once: what it says about the server, and whether the request
	// reached it.
	op := netOp(err)
	certificate, refused := certificateError(err), refusedToSend(err)
	if certificate {
		// This middleware's TLS settings refuse the server: not counted against the server,
		// whose passive health other middlewares share.
		logRarely(errorLog, "lane %s: %s: %v (check the URL's scheme, tls.rootCAs and tls.serverName)", s.lane, s.key, err)
	} else if countsAgainstServer(rw, req, op, refused) {
		fail(s)
	}
	status := errorStatus(err)
	if !replayable(req, op == "dial" || certificate || refused) {
		writeError(rw, status)
		return
	}
	if status == http.StatusGatewayTimeout {
		rw.Header()[retryMark] = retryAfterTimeout
		return
	}
	rw.Header()[retryMark] = retryValue
}

// clientFault reports whether the round trip failed through the client's fault: its body could
// not be read (a malformed chunked encoding, the limit of a middleware before dispatch), or it
// asked for an upgrade that ReverseProxy refuses (what else the client sent may fail the request:
// see invalidRequest). The body prepare gave the request is a MaxBytesReader without a limit: it
// answers a read of nothing with the error it met, without reading more.
func clientFault(req *http.Request) bool {
	state := stateOf(req)
	if state == nil {
		return false
	}
	if state.badUpgrade {
		return true
	}
	if state.body == nil {
		return false
	}
	_, err := state.body.Read(nil)
	return err != nil && err != io.EOF
}

// invalidRequest reports whether the request could not be sent because of what the client sent:
// Go's transport refused its headers or trailers (a Trailer header that declares a name that is
// not a token, which Go's HTTP server lets through) or could not write its Host (an absolute
// request target whose host is not valid IDNA, such as "http://o\x96her/": Go's server takes it
// as the request's Host without checking it, and the transport fails once connected), or
// ReverseProxy refused its method (CONNECT, since Go 1.27). The server got nothing it could act
// on, and any other server or the fallback would fail the same way. These errors are not
// exported, so their messages tell.
func invalidRequest(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "net/http: invalid trailer ") || strings.HasPrefix(msg, "net/http: invalid header ") ||
		strings.HasPrefix(msg, "idna: ") || msg == "client sent unsupported CONNECT request"
}

// answered reports whether the server had answered the failed request: it passed an interim
// response (1xx) on to the client, which cleared the response headers and with them retryMark,
// or it switched protocols.
func answered(rw http.ResponseWriter, req *http.Request, err error) bool {
	if rw.Header()[retryMark] == nil {
		return true
	}
	u := stateOf(req)
	return u != nil && u.answered || errors.Is(err, errUnaskedSwitch)
}

// replayable reports whether a failed request may be sent again: when it was unsent, that is it
// never reached the server (no connection could be opened, the server's certificate or lack of
// TLS ended the handshake, or the transport refused to send it, so nothing read its body either;
// prepare kept the body open), or when it has no body and is idempotent: by its method (RFC 9110:
// sending it twice has the effect of sending it once) or by an Idempotency-Key header (which Go's
// own transport also honours for its retries). A POST whose response did not arrive in time may
// have been carried out, and a body that was sent cannot be sent again: they are answered 502 or
// 504. (The proxy's outgoing request has a body exactly when the incoming one has a body and a
// length other than 0.)
func replayable(req *http.Request, unsent bool) bool {
	if unsent {
		return true
	}
	hasKey := req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
	return (req.Body == nil || req.ContentLength == 0) && (idempotent[req.Method] || hasKey)
}

// netOp returns the operation of the *net.OpError in err ("dial", "remote error" for a TLS alert
// the server sent, …), or "".
func netOp(err error) string {
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return opErr.Op
	}
	return ""
}

// countsAgainstServer reports whether a failure of req counts against the server for passive
// health; op is the network operation that failed (see netOp) and refused whether the transport
// refused to send the request (see refusedToSend). A failure to connect always counts. A request
// the transport refused to send never does. Any other failure may be the request's doing rather than the
// server's, so it counts only on the first server of a lane the request went to, not on the
// servers it is retried on (retriedMark), so that these failures of one request cost a lane at
// most one (failures to connect, and 502/503/504 answers, count on every server); and for a
// protocol upgrade, not when the server sent a TLS alert (a server that speaks only HTTP/2
// refuses the HTTP/1.1 connection an upgrade needs).
func countsAgainstServer(rw http.ResponseWriter, req *http.Request, op string, refused bool) bool {
	if refused {
		return false
	}
	if op == "dial" {
		return true
	}
	return rw.Header()[retriedMark] == nil && (req.Header["Upgrade"] == nil || op != "remote error")
}

// refusedToSend reports whether Go's transport refused to send the request because of its
// headers: an upgrade other than WebSocket to an HTTP/2 server (WebSocket upgrades go over
// HTTP/1.1), or headers larger than the HTTP/2 server accepts. The server never saw the request.
// The transport's errors are internal, so their messages tell (the tests check them on the Go
// version in use).
func refusedToSend(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "invalid Upgrade request header") || strings.Contains(msg, "invalid Connection request header") ||
		strings.Contains(msg, "request header list larger than peer's advertised limit")
}

// certificateError reports whether err is a failure of the TLS handshake that the
// configuration has to mend: the server's certificate could not be verified, or the server does
// not speak TLS. proxyError logs those (as Traefik logs its own at error level), since every
// request to the server fails the same way; the request was never sent.
func certificateError(err error) bool {
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	// A record header error carries the connection only for the server's first record, when the
	// server does not speak TLS; a later one comes once the request may have been sent.
	return errors.As(err, &verify) || errors.As(err, &record) && record.Conn != nil
}

// idempotent holds the idempotent methods of RFC 9110.
var idempotent = map[string]bool{
	http.MethodGet:     true,
	http.MethodHead:    true,
	http.MethodOptions: true,
	http.MethodTrace:   true,
	http.MethodPut:     true,
	http.MethodDelete:  true,
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

// errorLog writes the rare errors of proxyError with the log package, which Traefik's plugin
// loader shows at error level, naming the plugin. (ReverseProxy's own messages, such as a
// response that broke off after its headers were sent, go to Go's standard logger: Yaegi cannot
// hand it a *log.Logger.)
var errorLog = &rareLogger{}

// logInterval is the shortest time between two lines of errorLog.
const logInterval = 10 * time.Second

// rareLogger writes a line at most once per logInterval and counts the lines it drops. It is
// written through logRarely, a plain function rather than a method (see healthTable).
type rareLogger struct {
	mu      sync.Mutex
	last    time.Time
	dropped int
}

// logRarely writes a line to l, or drops it when the previous one was written less than
// logInterval ago.
func logRarely(l *rareLogger, format string, args ...interface{}) {
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
	log.Print("graylane-dispatch: " + msg)
}
