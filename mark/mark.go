package mark

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Policies for a lane header that arrives with the request.
const (
	incomingStrip   = "strip"
	incomingKeep    = "keep"
	incomingTrusted = "trustedips"
)

// handler is one mark middleware instance. Everything is compiled in New; ServeHTTP only looks up.
type handler struct {
	next       http.Handler
	header     string // canonical lane header key
	incoming   string // incomingStrip, incomingKeep or incomingTrusted
	strip      bool   // incoming is incomingStrip
	trusted    ipSet
	clientIP   *clientIPStrategy // nil: the direct peer
	identity   *identitySource
	version    *versionSource
	anonymous  *anonymousPolicy
	ruleHeader string // canonical response header key, or ""
	rules      []rule
	index      *ruleIndex
	fieldSlots int // the number of named request fields the rules read and a request caches
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
		return nil, err
	}
	return h, nil
}

// validate checks the fields that are not parsed into something else by build.
func validate(cfg *Config) error {
	if err := checkHeaderName(cfg.Header); err != nil {
		return fmt.Errorf("header: %q: %w", cfg.Header, err)
	}
	if strings.EqualFold(cfg.Header, "Host") {
		// Go's server moves Host out of the header map into Request.Host.
		return fmt.Errorf("header: %q: the request's host, not a header in Traefik: name another header", cfg.Header)
	}
	switch strings.ToLower(cfg.Incoming) {
	case "", incomingStrip, incomingKeep:
	case incomingTrusted:
		if len(cfg.TrustedIPs) == 0 {
			return errors.New("trustedIPs: must not be empty with incoming trustedIPs")
		}
	default:
		return fmt.Errorf("incoming: %q: must be strip, keep or trustedIPs", cfg.Incoming)
	}
	if err := checkHeaderName(cfg.RuleHeader); err != nil {
		return fmt.Errorf("ruleHeader: %q: %w", cfg.RuleHeader, err)
	}
	if cfg.DefaultLane != "" {
		if _, err := parseLane(cfg.DefaultLane); err != nil {
			return fmt.Errorf("defaultLane: %q: %w", cfg.DefaultLane, err)
		}
	}
	if err := cfg.Identity.validate(); err != nil {
		return fmt.Errorf("identity.%w", err)
	}
	if err := cfg.Version.validate(); err != nil {
		return fmt.Errorf("version.%w", err)
	}
	return validateRules(cfg)
}

// validateRules checks that rule names are unique and that the sources the rules read are set.
func validateRules(cfg *Config) error {
	id, v := cfg.Identity, cfg.Version
	hasIdentity := id.Header != "" || id.Cookie != "" || id.Query != "" || id.JWTClaim != ""
	seen := make(map[string]int, len(cfg.Rules))
	for i := 0; i < len(cfg.Rules); i++ {
		r := &cfg.Rules[i]
		if j, dup := seen[r.Name]; dup && r.Name != "" {
			return fmt.Errorf("rules[%d].name: %q: already used by rules[%d]", i, r.Name, j)
		}
		seen[r.Name] = i
		if len(r.Users) > 0 && !hasIdentity {
			return fmt.Errorf("rules[%d].users[0]: %q: no identity source: set identity.header, cookie, query or jwtClaim", i, r.Users[0])
		}
		if r.Versions != "" && v.Header == "" && v.Query == "" {
			return fmt.Errorf("rules[%d].versions: %q: no version source: set version.header or version.query", i, r.Versions)
		}
		if (r.Percent != nil || len(r.Ramp) > 0) && !hasIdentity && strings.EqualFold(cfg.Anonymous, anonymousNone) {
			field := "ramp"
			if r.Percent != nil {
				field = fmt.Sprintf("percent: %v", *r.Percent)
			}
			return fmt.Errorf("rules[%d].%s: never matches: no identity source, and anonymous none: set identity.header, cookie, query or jwtClaim, or another anonymous", i, field)
		}
	}
	return nil
}

// withDefaults returns a copy of cfg whose empty fields hold their default values.
func withDefaults(cfg Config) Config {
	def := CreateConfig()
	if cfg.Header == "" {
		cfg.Header = def.Header
	}
	if cfg.Incoming == "" {
		cfg.Incoming = def.Incoming
	}
	if cfg.Anonymous == "" {
		cfg.Anonymous = def.Anonymous
	}
	cfg.StickyCookie = cfg.StickyCookie.withDefaults(def.StickyCookie)
	return cfg
}

// build compiles the configuration into a handler.
func build(next http.Handler, cfg *Config) (*handler, error) {
	h := &handler{
		next:     next,
		header:   http.CanonicalHeaderKey(cfg.Header),
		incoming: strings.ToLower(cfg.Incoming),
		strip:    strings.EqualFold(cfg.Incoming, incomingStrip),
	}
	if cfg.RuleHeader != "" {
		h.ruleHeader = http.CanonicalHeaderKey(cfg.RuleHeader)
	}
	trusted, err := parseIPSet("trustedIPs", cfg.TrustedIPs)
	if err != nil {
		return nil, err
	}
	h.trusted = trusted
	if h.clientIP, err = parseIPStrategy(cfg.IPStrategy); err != nil {
		return nil, err
	}
	anonymous, err := newAnonymousPolicy(cfg.Anonymous, cfg.StickyCookie)
	if err != nil {
		return nil, err
	}
	anonymous.clientIP = h.clientIP
	h.anonymous = &anonymous
	var fields fieldTable // the named request fields the rules read, numbered for the request cache
	h.rules = make([]rule, len(cfg.Rules))
	for i := 0; i < len(cfg.Rules); i++ {
		if err := h.rules[i].build(fmt.Sprintf("rules[%d]", i), &cfg.Rules[i], &fields); err != nil {
			return nil, err
		}
	}
	h.fieldSlots = len(fields)
	if cfg.DefaultLane != "" {
		// The default lane is the lane of a last rule without name or conditions: every list of
		// candidate rules ends with it, and the request path needs no test of its own.
		h.rules = append(h.rules, rule{lane: strings.ToLower(cfg.DefaultLane)})
	}
	// Pointers, so that the request path reads them without copying them: under Yaegi, reading
	// a struct field copies it.
	identity, version, index := newIdentitySource(cfg.Identity), newVersionSource(cfg.Version, h.rules), indexRules(h.rules)
	h.identity, h.version, h.index = &identity, &version, &index
	return h, nil
}

// ServeHTTP sets the lane header of req, then passes req on: the trusted incoming lane header,
// or the lane of the first matching rule, or the default lane, or none; with a rule header
// configured, it names the matching rule on rw.
//
// It does the common work itself, in one function, and calls out only for what is rare or
// long: under Yaegi, every call of an interpreted function costs allocations, and so does every
// expression of a called function, whether it runs or not (see docs/mark.md).
func (h *handler) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if h.strip || !keepIncoming(h, req) {
		delete(req.Header, h.header)
		ix := h.index
		d := &decision{handler: h, rw: rw, req: req}
		if ix.needsID {
			d.identity = lookupIdentity(h.identity, req)
			d.identityDone = true
		}
		// The candidate rules, from the index (see index.go).
		hit := ix.users[d.identity]
		if hit == nil {
			hit = ix.none
		}
		if ix.byOthers {
			hit = otherKeys(ix, d, hit)
		}
		list := hit.noPatterns
		if ix.byPath && mayMatchPath(ix, req.URL.Path) {
			list = pathKeys(ix, d, hit)
		}
		for _, r := range list {
			if r.how == matchAlways || matchCandidate(r, d) {
				req.Header[h.header] = []string{r.lane}
				if h.ruleHeader != "" {
					nameRule(rw, h.ruleHeader, r.name)
				}
				break
			}
		}
	}
	h.next.ServeHTTP(rw, req)
}

// nameRule sets the rule header key to the name of the matching rule on rw; the rule of the
// default lane has no name, and sets none.
func nameRule(rw http.ResponseWriter, key, name string) {
	if name != "" {
		rw.Header()[key] = []string{name}
	}
}

// The request path is written as plain functions rather than methods: Yaegi runs a method call
// about five times slower than a function call.

// keepIncoming reports, for incoming keep or trustedIPs, whether the lane header sent with req is
// kept, in which case the rules are skipped. A kept header is normalised to its lower-case lane; one that is not a valid lane is not
// kept (the caller removes it and runs the rules).
func keepIncoming(h *handler, req *http.Request) bool {
	if h.incoming == incomingTrusted {
		ip, ok := peerIP(req)
		if !ok || !inIPSet(h.trusted, ip) {
			return false
		}
	}
	values := req.Header[h.header]
	if len(values) == 0 || values[0] == "" {
		return false
	}
	lane, err := parseLane(values[0])
	if err != nil {
		return false
	}
	if len(values) != 1 || lane != values[0] {
		req.Header[h.header] = []string{lane}
	}
	return true
}

// checkHeaderName accepts an empty name (meaning unset) or an HTTP token.
func checkHeaderName(name string) error {
	if name == "" || isToken(name) {
		return nil
	}
	return errors.New("not a valid header name")
}

// isToken reports whether s is a non-empty RFC 9110 token, as header and cookie names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte("!#$%&'*+-.^_`|~", s[i]) < 0 {
			return false
		}
	}
	return true
}

// isAlnum reports whether c is an ASCII letter or digit.
// (A tagless switch case listing several conditions is evaluated wrongly by Yaegi: write ||.)
func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
