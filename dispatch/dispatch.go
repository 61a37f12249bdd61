package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Values of UnknownLane and of a lane's Fallback.
const (
	unknownNext   = "next"
	unknownReject = "reject"
	fallbackNext  = "next"
	fallbackNone  = "none"
)

// maxWeight is the largest server weight.
const maxWeight = 1000

// handler is one dispatch middleware instance. Everything is built in New; ServeHTTP only looks up.
type handler struct {
	unknown http.Handler // the handler of unknown lanes: next, or a rejecter
	header  string       // canonical lane header key
	lanes   map[string]*lane
}

// lane is one configured lane: its servers and what takes a request they cannot.
type lane struct {
	name     string
	passHost bool
	balancer *balancer
	// only is balancer.only, the lane's one server to pick or nil, kept here too (nil for a
	// sticky lane): serveLane reads it on every request, and under Yaegi l.balancer.only is one
	// value more to compute.
	only *server
	// fallback is fallbackNext, fallbackNone or the name of fallbackLane.
	fallback     string
	fallbackLane *lane
	// servedBy is the served-by header value when the fallback takes the request: "<lane> next|none".
	servedBy string
	// servedByKey and next are the middleware's served-by header key (or "") and next handler,
	// for the fallback (a lane has no pointer to its handler: Yaegi cannot build the two
	// mutually recursive types).
	servedByKey string
	next        http.Handler
	// sticky is the lane's sticky sessions, or nil.
	sticky *stickiness
}

// New validates the configuration, fills in its defaults and builds the middleware.
func New(_ context.Context, next http.Handler, config *Config, _ string) (http.Handler, error) {
	if config == nil {
		return nil, errors.New("missing configuration")
	}
	if err := validate(config); err != nil {
		return nil, err
	}
	cfg := withDefaults(*config)
	h, err := build(next, &cfg)
	if err != nil {
		// Not "return build(...)": Yaegi loses the error when it converts *handler to http.Handler.
		return nil, err
	}
	return h, nil
}

// validate checks the fields that build does not parse into something else.
func validate(cfg *Config) error {
	if err := checkHeaderName(cfg.Header); err != nil {
		return fmt.Errorf("header: %q: %w", cfg.Header, err)
	}
	if strings.EqualFold(cfg.Header, "Host") {
		// Go's server moves Host out of the header map into Request.Host.
		return fmt.Errorf("header: %q: the request's host, not a header in Traefik: name another header", cfg.Header)
	}
	if err := checkHeaderName(cfg.ServedByHeader); err != nil {
		return fmt.Errorf("servedByHeader: %q: %w", cfg.ServedByHeader, err)
	}
	switch strings.ToLower(cfg.UnknownLane) {
	case "", unknownNext, unknownReject:
	default:
		return fmt.Errorf("unknownLane: %q: must be next or reject", cfg.UnknownLane)
	}
	if cfg.Health.MaxFails != nil && (*cfg.Health.MaxFails < 0 || *cfg.Health.MaxFails > maxMaxFails) {
		return fmt.Errorf("health.maxFails: %d: must be 0 (off) to %d", *cfg.Health.MaxFails, maxMaxFails)
	}
	return validateLanes(cfg.Lanes)
}

// validateLanes checks lane names, that every lane has servers, and that fallbacks name
// existing lanes without a cycle.
func validateLanes(lanes map[string]Lane) error {
	names := sortedNames(lanes)
	fallbacks := make(map[string]string, len(names))
	for i := 0; i < len(names); i++ {
		name := names[i]
		lower := lowerASCII(name)
		if !isLaneName(lower) {
			return fmt.Errorf("%s: %q: bad lane name, want [a-z0-9][a-z0-9._-]{0,62}", badLanePath(name), name)
		}
		if lower == fallbackNext || lower == fallbackNone {
			return fmt.Errorf("lanes.%s: %q: reserved, it is a fallback keyword", name, name)
		}
		if _, dup := fallbacks[lower]; dup {
			return fmt.Errorf("lanes.%s: %q: same lane as another key (lane names are case-insensitive)", name, name)
		}
		if len(lanes[name].Servers) == 0 {
			return fmt.Errorf("lanes.%s.servers: must not be empty", name)
		}
		fallbacks[lower] = lowerASCII(lanes[name].Fallback)
	}
	for i := 0; i < len(names); i++ {
		name := names[i]
		fb := fallbacks[strings.ToLower(name)]
		switch fb {
		case "", fallbackNext, fallbackNone:
			continue
		}
		if _, ok := fallbacks[fb]; !ok {
			return fmt.Errorf("lanes.%s.fallback: %q: must be next, none or a configured lane", name, lanes[name].Fallback)
		}
		if cycle := fallbackCycle(strings.ToLower(name), fallbacks); cycle != "" {
			return fmt.Errorf("lanes.%s.fallback: cycle %s", name, cycle)
		}
	}
	return nil
}

// lowerASCII returns s lower-cased, or s itself when lower-casing changes its length: a
// character that strings.ToLower maps into ASCII, such as the Kelvin sign (to k), would
// otherwise make a lane name of what is none (mark refuses it as a lane).
func lowerASCII(s string) string {
	if lower := strings.ToLower(s); len(lower) == len(s) {
		return lower
	}
	return s
}

// badLanePath returns the field path of the lane called name, which is not a lane name, for its
// error: lanes.<name>, or lanes alone when name holds a control character, which would break the
// error's line in Traefik's log (the error quotes the name after the path).
func badLanePath(name string) string {
	if strings.IndexFunc(name, isControl) >= 0 {
		return "lanes"
	}
	return "lanes." + name
}

// fallbackCycle follows the fallbacks from start and returns "a -> b -> a" when they lead back
// to start, or "" when they end (in next, none, or a cycle that start is not part of: that one
// is reported for one of its own lanes).
func fallbackCycle(start string, fallbacks map[string]string) string {
	path := []string{start}
	cur := start
	for len(path) <= len(fallbacks) {
		cur = fallbacks[cur]
		if _, ok := fallbacks[cur]; !ok {
			return ""
		}
		path = append(path, cur)
		if cur == start {
			return strings.Join(path, " -> ")
		}
	}
	return ""
}

// withDefaults returns a copy of cfg whose empty fields hold their default values.
func withDefaults(cfg Config) Config {
	def := CreateConfig()
	if cfg.Header == "" {
		cfg.Header = def.Header
	}
	if cfg.UnknownLane == "" {
		cfg.UnknownLane = def.UnknownLane
	}
	if cfg.Timeouts.Dial == "" {
		cfg.Timeouts.Dial = def.Timeouts.Dial
	}
	if cfg.Timeouts.ResponseHeader == "" {
		cfg.Timeouts.ResponseHeader = def.Timeouts.ResponseHeader
	}
	if cfg.Timeouts.Idle == "" {
		cfg.Timeouts.Idle = def.Timeouts.Idle
	}
	if cfg.Health.MaxFails == nil {
		maxFails := defaultMaxFails
		cfg.Health.MaxFails = &maxFails
	}
	if cfg.Health.Window == "" {
		cfg.Health.Window = def.Health.Window
	}
	if cfg.Health.Cooldown == "" {
		cfg.Health.Cooldown = def.Health.Cooldown
	}
	if cfg.FlushInterval == "" {
		cfg.FlushInterval = def.FlushInterval
	}
	return cfg
}

// build parses the durations and URLs of the configuration and builds the handler, its lanes,
// their balancers and the servers' proxies.
func build(next http.Handler, cfg *Config) (*handler, error) {
	h := &handler{
		unknown: next,
		header:  http.CanonicalHeaderKey(cfg.Header),
		lanes:   make(map[string]*lane, len(cfg.Lanes)),
	}
	if strings.ToLower(cfg.UnknownLane) == unknownReject {
		var unknown http.Handler = rejecter{}
		h.unknown = unknown
	}
	opts := &serverOptions{}
	if cfg.ServedByHeader != "" {
		opts.servedBy = http.CanonicalHeaderKey(cfg.ServedByHeader)
	}
	health, err := parseHealth(&cfg.Health)
	if err != nil {
		return nil, fmt.Errorf("health.%w", err)
	}
	opts.health = &health
	if err = parseTimeouts(&cfg.Timeouts, &opts.transport); err != nil {
		return nil, fmt.Errorf("timeouts.%w", err)
	}
	if err = parseTLS(&cfg.TLS, &opts.transport); err != nil {
		return nil, fmt.Errorf("tls.%w", err)
	}
	if opts.flush, err = parseFlushInterval(cfg.FlushInterval); err != nil {
		return nil, fmt.Errorf("flushInterval: %w", err)
	}
	names := sortedNames(cfg.Lanes)
	for i := 0; i < len(names); i++ {
		l, err := buildLane(strings.ToLower(names[i]), cfg.Lanes[names[i]], opts)
		if err != nil {
			return nil, fmt.Errorf("lanes.%s.%w", names[i], err)
		}
		l.next = next
		h.lanes[l.name] = l
	}
	for _, l := range h.lanes {
		if l.fallback != fallbackNext && l.fallback != fallbackNone {
			l.fallbackLane = h.lanes[l.fallback]
		}
	}
	return h, nil
}

// serverOptions are the settings of a middleware that all its servers share.
type serverOptions struct {
	transport transportOptions
	flush     time.Duration // the proxies' FlushInterval
	health    *healthPolicy
	servedBy  string // canonical served-by header key, or ""
}

// buildLane builds one lane; its fallback lane is linked by the caller.
func buildLane(name string, cfg Lane, opts *serverOptions) (*lane, error) {
	l := &lane{name: name, passHost: cfg.PassHostHeader == nil || *cfg.PassHostHeader}
	l.fallback = strings.ToLower(cfg.Fallback)
	if l.fallback == "" {
		l.fallback = fallbackNext
	}
	l.servedBy = name + " " + l.fallback
	l.servedByKey = opts.servedBy
	var cookie *http.Cookie
	if cfg.Sticky != nil {
		c, err := parseStickyCookie(name, &cfg.Sticky.Cookie)
		if err != nil {
			return nil, fmt.Errorf("sticky.cookie.%w", err)
		}
		cookie = c
	}
	servers := make([]*server, len(cfg.Servers))
	for i := 0; i < len(cfg.Servers); i++ {
		s, err := buildServer(name, i, cfg.Servers[i], opts, cookie)
		if err != nil {
			return nil, fmt.Errorf("servers[%d].%w", i, err)
		}
		servers[i] = s
	}
	l.balancer = newBalancer(servers, opts.health)
	l.only = l.balancer.only
	if cookie != nil {
		l.sticky = newStickiness(cookie.Name, servers)
		l.only = nil // every request of a sticky lane goes through pickSticky
	}
	return l, nil
}

// buildServer parses one server of a lane and builds its proxy; cookie is the lane's sticky
// cookie, or nil.
func buildServer(laneName string, index int, cfg Server, opts *serverOptions, cookie *http.Cookie) (*server, error) {
	u, err := parseServerURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %q: %w", cfg.URL, err)
	}
	weight := 1
	if cfg.Weight != nil {
		weight = *cfg.Weight
	}
	if weight < 0 || weight > maxWeight {
		return nil, fmt.Errorf("weight: %d: must be 0 (drained) to %d", weight, maxWeight)
	}
	s := &server{
		host:        u.Host,
		key:         serverKey(u),
		lane:        laneName,
		index:       index,
		weight:      weight,
		health:      opts.health,
		servedByKey: opts.servedBy,
	}
	if opts.servedBy != "" {
		s.servedBy = []string{laneName + " " + u.String()}
	}
	if cookie != nil {
		makeSticky(s, *cookie)
	}
	s.proxy = newProxy(s, u, opts)
	return s, nil
}

// parseServerURL accepts an absolute http or https URL with a host (valid UTF-8), an optional
// port (1 to 65535) and an optional path.
func parseServerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("scheme must be http or https")
	}
	if u.Hostname() == "" {
		return nil, errors.New("no host")
	}
	if !utf8.ValidString(u.Host) {
		// url.Parse lets bytes that are no UTF-8 through; no name server knows such a host,
		// and Go's transport could not write it as the request's Host.
		return nil, errors.New("host is not valid UTF-8")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("port must be 1 to 65535")
		}
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, errors.New("must not have user info, a query or a fragment")
	}
	return u, nil
}

// serverKey returns the key of the server at u in the package-level health table, also hashed
// into its sticky cookie value: its address (see serverAddress) and its path, decoded and
// escaped again (so that %41pp, App and %2f, %2F, / are one path), without a path of just "/",
// so that every spelling of one server's URL (http://Canary, http://canary:80/) shares one
// health record and names one server in a sticky cookie.
func serverKey(u *url.URL) string {
	path := (&url.URL{Path: u.Path}).EscapedPath()
	if path == "/" {
		path = ""
	}
	return serverAddress(u) + path
}

// serverAddress returns the scheme, host and port of u as one text, the host lower-cased (an
// IPv6 zone, a network interface's name, keeps its case) and the port written out (80 for http,
// 443 for https, without leading zeros): the same for every spelling of one address.
func serverAddress(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	} else if n, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(n) // without leading zeros: 080 is 80
	}
	host, zone, _ := strings.Cut(u.Hostname(), "%")
	host = strings.ToLower(host)
	if zone != "" {
		host += "%" + zone
	}
	return u.Scheme + "://" + net.JoinHostPort(host, port)
}

// parseDuration parses a Go duration ("5s", "1m30s") or a plain number of seconds ("5").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > maxSeconds || n < -maxSeconds {
			return 0, fmt.Errorf("%q: too large", s)
		}
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%q: bad duration, want e.g. \"5s\" or a number of seconds", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q: must not be negative", s)
	}
	return d, nil
}

// maxSeconds is the largest number of seconds a time.Duration holds.
const maxSeconds = (1<<63 - 1) / int64(time.Second)

// parseFlushInterval parses FlushInterval: a duration, or "-1" to flush after every write.
func parseFlushInterval(s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "-1" {
		return -1, nil
	}
	return parseDuration(s)
}

// sortedNames returns the lane names of lanes in order, so errors and builds are deterministic.
func sortedNames(lanes map[string]Lane) []string {
	names := make([]string, 0, len(lanes))
	for name := range lanes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// ServeHTTP sends a request of a configured lane to that lane's servers, any other to unknownLane.
// The lane is the lane header's first value, trimmed and lower-cased; a value that is not a valid
// lane name is simply not found among the configured lanes. Under Yaegi every value a function
// computes costs an allocation, so ServeHTTP is kept to the few steps that a request without a
// lane takes (unknownLane's handler is chosen in New), and the exact lane name is looked up
// before the normalised one.
func (h *handler) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	// A range rather than len and an index: fewer values for Yaegi. It looks at the first value only.
	for _, value := range req.Header[h.header] {
		// Comma ok rather than a test for nil (the map holds no nil): one allocation less.
		if l, ok := h.lanes[value]; ok {
			serveLane(l, rw, req)
			return
		}
		serveValue(h, value, rw, req)
		return //nolint:staticcheck // SA4004: the first value only, on purpose
	}
	h.unknown.ServeHTTP(rw, req)
}

// rejecter is the handler of unknown lanes when unknownLane is reject.
type rejecter struct{}

// ServeHTTP answers a request of an unknown lane.
func (rejecter) ServeHTTP(rw http.ResponseWriter, _ *http.Request) {
	http.Error(rw, "unknown gray lane", http.StatusBadRequest)
}

// serveValue serves a request whose lane header value is not exactly a lane name: spaces and
// tabs around it are trimmed and it is lower-cased, and a request of an unknown lane goes to
// unknownLane. Lane names are ASCII (mark with incoming keep refuses any other value), so only
// ASCII spaces are trimmed, and a value that lower-casing shortens is no lane: a non-ASCII
// character that strings.ToLower maps into ASCII (the Kelvin sign to k, İ to i) shortens it.
func serveValue(h *handler, value string, rw http.ResponseWriter, req *http.Request) {
	name := strings.Trim(value, " \t")
	key := strings.ToLower(name)
	if l, ok := h.lanes[key]; ok && len(key) == len(name) {
		serveLane(l, rw, req)
		return
	}
	h.unknown.ServeHTTP(rw, req)
}

// serveLane sends req to the next server of l, retries a failed request that may be sent again
// (see replayable) on the lane's other servers, and hands it to l's fallback when no server is
// available. The request keeps its state in the response headers, which costs far less under Yaegi than carrying it in
// the request context: retryMark is there, without a value, while a server's proxy runs, and
// with one when proxyError asks for a retry. (ReverseProxy clears the response headers when it
// passes an interim 1xx response on to the client: then the mark is gone, and proxyError knows
// that the client has seen something.) A mark without a value is never written to the client:
// HTTP/1, HTTP/2 and HTTP/3 all write a header once per value. A lane with one server to pick
// (and no sticky sessions) takes it at once while the health table holds no record; any other
// lane asks pickServer, a call that the lanes with one server do not pay for.
func serveLane(l *lane, rw http.ResponseWriter, req *http.Request) {
	s := l.only
	if s == nil || atomic.LoadInt64(healthSize) != 0 {
		s = pickServer(l, req)
	}
	if s == nil {
		serveFallback(l, rw, req)
		return
	}
	hdr := req.Header
	// A product rather than two tests for 0: one value fewer for Yaegi.
	if len(hdr["X-Forwarded-Host"])*len(hdr["X-Forwarded-Proto"]) == 0 || hdr["Upgrade"] != nil || req.ContentLength != 0 {
		req = prepare(req)
	}
	out := rw.Header()
	out[retryMark] = pendingMark
	if l.passHost {
		s.proxy.ServeHTTP(rw, req)
	} else {
		forwardHost(s, rw, req)
	}
	if len(out[retryMark]) != 0 {
		retry(l, s, rw, req)
		return
	}
	delete(out, retryMark)
}

// retry sends a request that failed on the server first to the lane's next available servers in
// turn, as long as their proxies ask for a retry, then to the lane's fallback, which answers 504
// rather than 502 for fallback none when the last server tried timed out.
func retry(l *lane, first *server, rw http.ResponseWriter, req *http.Request) {
	out := rw.Header()
	for s := first; len(out[retryMark]) != 0; {
		if s = after(l.balancer, s, first); s == nil {
			status := http.StatusBadGateway
			if out[retryMark][0] == retryAfterTimeout[0] {
				status = http.StatusGatewayTimeout
			}
			delete(out, retryMark)
			delete(out, retriedMark)
			fallBackAnswering(l, rw, req, status)
			return
		}
		out[retryMark] = pendingMark
		out[retriedMark] = pendingMark
		if l.passHost {
			s.proxy.ServeHTTP(rw, req)
		} else {
			forwardHost(s, rw, req)
		}
	}
	delete(out, retryMark)
	delete(out, retriedMark)
}

// pickServer returns the server of l for req, or nil when none is available, for a lane without
// one server to pick or while the health table holds records: a sticky lane's is the one the
// client's cookie names (see pickSticky); otherwise the balancer's next.
func pickServer(l *lane, req *http.Request) *server {
	if l.sticky != nil {
		return pickSticky(l, req)
	}
	if atomic.LoadInt64(healthSize) != 0 {
		return pickAvailable(l.balancer)
	}
	return pick(l.balancer)
}

// forwardHost sends req to s with s's host as Host, for a lane that does not pass the client's.
// The Host is changed for the time of the call only (the proxy copies the request), so that a
// fallback gets the client's Host. Not restored by a defer, which costs a callback under Yaegi:
// when a response body breaks off, ReverseProxy aborts the handler with a panic and the Host
// stays the server's, which only the handlers above dispatch could see while Traefik closes the
// connection (and Traefik hands each middleware its own copy of the request anyway).
func forwardHost(s *server, rw http.ResponseWriter, req *http.Request) {
	host := req.Host
	req.Host = s.host
	s.proxy.ServeHTTP(rw, req)
	req.Host = host
}

// serveFallback hands a request that l's servers cannot take to l's fallback; fallback none
// answers 502. (A function of its own rather than a status argument in serveLane's call: under
// Yaegi, an argument costs serveLane an allocation on every request.)
func serveFallback(l *lane, rw http.ResponseWriter, req *http.Request) {
	fallBackAnswering(l, rw, req, http.StatusBadGateway)
}

// fallBackAnswering hands a request that l's servers cannot take to l's fallback; fallback none
// answers status.
func fallBackAnswering(l *lane, rw http.ResponseWriter, req *http.Request, status int) {
	if req.Header["Upgrade"] != nil {
		req = asReceived(req)
	}
	if l.fallbackLane != nil {
		serveLane(l.fallbackLane, rw, req)
		return
	}
	if l.servedByKey != "" {
		rw.Header().Set(l.servedByKey, l.servedBy)
	}
	if l.fallback == fallbackNone {
		writeError(rw, status)
		return
	}
	l.next.ServeHTTP(rw, req)
}

// isLaneName reports whether s is a lane name: [a-z0-9]([a-z0-9._-]{0,62}).
func isLaneName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')) {
			return false
		}
	}
	return true
}

// checkHeaderName accepts an empty name (meaning unset) or an HTTP token.
func checkHeaderName(name string) error {
	for i := 0; i < len(name); i++ {
		if !isTokenByte(name[i]) {
			return errors.New("not a valid header name")
		}
	}
	return nil
}

// isTokenByte reports whether c may appear in an RFC 9110 token, as header names are.
func isTokenByte(c byte) bool {
	// One condition, not a case list: Yaegi evaluates only the first expression of a case list
	// in a switch without a tag.
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
