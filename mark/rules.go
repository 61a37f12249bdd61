package mark

import (
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"
)

// rule is a compiled Rule. A condition whose field is empty is not checked.
type rule struct {
	name      string
	lane      string
	users     map[string]struct{}
	path      pathMatch
	methods   []string
	headers   []pair // canonical header keys
	cookies   []pair
	query     []pair
	sourceIPs ipSet
	versions  constraint
	window    window
	percent   bool       // a percentage condition is set (by percent or ramp)
	threshold uint64     // buckets out of 10000 that match, without ramp
	ramp      []rampStep // replaces threshold when set
	salt      string     // salt + ":"
}

// pair is a name that must be present with value, or with any value when present is set.
type pair struct {
	name    string
	value   string
	present bool
}

// Kinds of path conditions.
const (
	pathAny = iota
	pathPrefix
	pathExact
	pathContains
	pathRegex
)

// pathMatch is a compiled PathMatch.
type pathMatch struct {
	kind  int
	value string   // pathPrefix, pathExact
	list  []string // pathContains
	re    *regexp.Regexp
}

// decision holds what one request's rule evaluation has looked up so far, so that each fact is
// read at most once per request, and only when a rule needs it.
type decision struct {
	handler       *handler
	rw            http.ResponseWriter
	req           *http.Request
	identity      string
	identityDone  bool
	version       version
	versionOK     bool
	versionDone   bool
	anonymous     string
	anonymousOK   bool
	anonymousDone bool
	now           time.Time
}

// userID returns the request's user ID, or "".
func (d *decision) userID() string {
	if !d.identityDone {
		d.identity = d.handler.identity.lookup(d.req)
		d.identityDone = true
	}
	return d.identity
}

// clientVersion returns the request's version; ok is false when it has none that parses.
func (d *decision) clientVersion() (*version, bool) {
	if !d.versionDone {
		d.version, d.versionOK = d.handler.version.lookup(d.req)
		d.versionDone = true
	}
	return &d.version, d.versionOK
}

// anonymousKey returns the percentage key of a request with no identity. It is looked up, and a
// sticky cookie issued, at most once per request.
func (d *decision) anonymousKey() (string, bool) {
	if !d.anonymousDone {
		d.anonymous, d.anonymousOK = d.handler.anonymous.key(d.rw, d.req)
		d.anonymousDone = true
	}
	return d.anonymous, d.anonymousOK
}

// clock returns the time the request's rules are evaluated at, read once per request.
func (d *decision) clock() time.Time {
	if d.now.IsZero() {
		d.now = time.Now()
	}
	return d.now
}

// inBucket reports whether the request falls in the first threshold buckets of salt: by its
// identity, else by its anonymous key, else (anonymous "random") by a fresh draw.
func (d *decision) inBucket(salt string, threshold uint64) bool {
	if threshold == 0 {
		return false
	}
	if id := d.userID(); id != "" {
		return bucket(salt, id) < threshold
	}
	if d.handler.anonymous.mode == anonymousRandom {
		return uint64(rand.Int63n(bucketCount)) < threshold
	}
	key, ok := d.anonymousKey()
	return ok && bucket(salt, key) < threshold
}

// build compiles cfg into r; at is the rule's field path for errors, such as "rules[2]".
func (r *rule) build(at string, cfg *Rule) error {
	if cfg.Name == "" {
		return fmt.Errorf("%s.name: must not be empty", at)
	}
	if strings.IndexFunc(cfg.Name, isControl) >= 0 {
		return fmt.Errorf("%s.name: %q: must not hold control characters", at, cfg.Name)
	}
	lane, err := parseLane(cfg.Lane)
	if err != nil {
		return fmt.Errorf("%s.lane: %q: %w", at, cfg.Lane, err)
	}
	*r = rule{name: cfg.Name, lane: lane}
	if len(cfg.Users) > 0 {
		r.users = make(map[string]struct{}, len(cfg.Users))
		for i := 0; i < len(cfg.Users); i++ {
			if cfg.Users[i] == "" {
				return fmt.Errorf("%s.users[%d]: must not be empty", at, i)
			}
			r.users[cfg.Users[i]] = struct{}{}
		}
	}
	if r.path, err = newPathMatch(cfg.Path); err != nil {
		return fmt.Errorf("%s.path%w", at, err)
	}
	for i := 0; i < len(cfg.Methods); i++ {
		if !isToken(cfg.Methods[i]) {
			return fmt.Errorf("%s.methods[%d]: %q: not an HTTP method", at, i, cfg.Methods[i])
		}
		r.methods = append(r.methods, strings.ToUpper(cfg.Methods[i]))
	}
	if r.headers, err = newPairs(cfg.Headers, true); err != nil {
		return fmt.Errorf("%s.headers%w", at, err)
	}
	if r.cookies, err = newPairs(cfg.Cookies, false); err != nil {
		return fmt.Errorf("%s.cookies%w", at, err)
	}
	if r.query, err = newPairs(cfg.Query, false); err != nil {
		return fmt.Errorf("%s.query%w", at, err)
	}
	if r.sourceIPs, err = parseIPSet(at+".sourceIPs", cfg.SourceIPs); err != nil {
		return err
	}
	if cfg.Versions != "" {
		if r.versions, err = parseConstraint(cfg.Versions); err != nil {
			return fmt.Errorf("%s.versions: %q: %w", at, cfg.Versions, err)
		}
	}
	if r.window, err = newWindow(at, cfg); err != nil {
		return err
	}
	if err := r.buildPercent(at, cfg); err != nil {
		return err
	}
	if !r.hasCondition() {
		return fmt.Errorf("%s: no condition", at)
	}
	return nil
}

// buildPercent compiles Percent, Ramp and Salt.
func (r *rule) buildPercent(at string, cfg *Rule) error {
	var err error
	if cfg.Percent != nil {
		if r.threshold, err = parsePercent(*cfg.Percent); err != nil {
			return fmt.Errorf("%s.percent: %v: %w", at, *cfg.Percent, err)
		}
	}
	if r.ramp, err = newRamp(at, cfg.Ramp); err != nil {
		return err
	}
	r.percent = cfg.Percent != nil || len(r.ramp) > 0
	r.salt = cfg.Salt
	if r.salt == "" {
		r.salt = cfg.Name
	}
	r.salt += ":"
	return nil
}

// hasCondition reports whether r checks anything at all.
func (r *rule) hasCondition() bool {
	return r.users != nil || r.path.kind != pathAny || len(r.methods) > 0 || len(r.headers) > 0 ||
		len(r.cookies) > 0 || len(r.query) > 0 || len(r.sourceIPs) > 0 || r.versions != nil ||
		r.window.set() || r.percent
}

// isControl reports whether c is an ASCII control character, which a header value cannot hold.
func isControl(c rune) bool {
	return c < 0x20 || c == 0x7f
}

// newPathMatch compiles a PathMatch; errors start with the subfield, as in ".regex: ...".
func newPathMatch(cfg PathMatch) (pathMatch, error) {
	set := 0
	var m pathMatch
	if cfg.Prefix != "" {
		set++
		m = pathMatch{kind: pathPrefix, value: cfg.Prefix}
	}
	if cfg.Exact != "" {
		set++
		m = pathMatch{kind: pathExact, value: cfg.Exact}
	}
	if len(cfg.Contains) > 0 {
		set++
		for i := 0; i < len(cfg.Contains); i++ {
			if cfg.Contains[i] == "" {
				return m, fmt.Errorf(".contains[%d]: must not be empty", i)
			}
		}
		m = pathMatch{kind: pathContains, list: cfg.Contains}
	}
	if cfg.Regex != "" {
		set++
		re, err := regexp.Compile(cfg.Regex)
		if err != nil {
			return m, fmt.Errorf(".regex: %q: %w", cfg.Regex, err)
		}
		m = pathMatch{kind: pathRegex, re: re}
	}
	if set > 1 {
		return m, errors.New(": set only one of prefix, exact, contains and regex")
	}
	return m, nil
}

// newPairs compiles a name → value condition map, sorted by name so errors are deterministic.
// Header names are checked and canonicalised when headers is set.
func newPairs(m map[string]string, headers bool) ([]pair, error) {
	if len(m) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	pairs := make([]pair, len(names))
	for i := 0; i < len(names); i++ {
		name, value := names[i], m[names[i]]
		switch {
		case name == "":
			return nil, errors.New(`[""]: empty name`)
		case headers && !isToken(name):
			return nil, fmt.Errorf("[%q]: not a valid header name", name)
		case headers:
			name = http.CanonicalHeaderKey(name)
		}
		pairs[i] = pair{name: name, value: value, present: value == "*"}
	}
	return pairs, nil
}

// match reports whether every condition of r holds for the request of d. Cheap conditions go first.
func (r *rule) match(d *decision) bool {
	req := d.req
	if r.window.set() && !r.window.contains(d.clock()) {
		return false
	}
	if len(r.methods) > 0 && !containsString(r.methods, req.Method) {
		return false
	}
	if !r.path.match(req.URL.Path) {
		return false
	}
	for i := 0; i < len(r.headers); i++ {
		values, ok := req.Header[r.headers[i].name]
		if !ok || !r.headers[i].accepts(firstOf(values)) {
			return false
		}
	}
	for i := 0; i < len(r.query); i++ {
		if v, ok := queryValue(req.URL.RawQuery, r.query[i].name); !ok || !r.query[i].accepts(v) {
			return false
		}
	}
	for i := 0; i < len(r.cookies); i++ {
		if v, ok := cookieValue(req.Header, r.cookies[i].name); !ok || !r.cookies[i].accepts(v) {
			return false
		}
	}
	if len(r.sourceIPs) > 0 {
		ip, ok := peerIP(req)
		if !ok || !r.sourceIPs.contains(ip) {
			return false
		}
	}
	if r.users != nil {
		if _, ok := r.users[d.userID()]; !ok {
			return false
		}
	}
	if r.versions != nil {
		if v, ok := d.clientVersion(); !ok || !r.versions.matches(v) {
			return false
		}
	}
	if r.percent {
		threshold := r.threshold
		if len(r.ramp) > 0 {
			threshold = rampThreshold(r.ramp, d.clock())
		}
		return d.inBucket(r.salt, threshold)
	}
	return true
}

// accepts reports whether the value v of a present name satisfies p.
func (p *pair) accepts(v string) bool {
	return p.present || v == p.value
}

// match reports whether path satisfies m.
func (m *pathMatch) match(path string) bool {
	switch m.kind {
	case pathPrefix:
		return strings.HasPrefix(path, m.value)
	case pathExact:
		return path == m.value
	case pathContains:
		for i := 0; i < len(m.list); i++ {
			if strings.Contains(path, m.list[i]) {
				return true
			}
		}
		return false
	case pathRegex:
		return m.re.MatchString(path)
	}
	return true
}

// firstOf returns the first of values, or "".
func firstOf(values []string) string {
	if len(values) > 0 {
		return values[0]
	}
	return ""
}

// containsString reports whether list holds s.
func containsString(list []string, s string) bool {
	for i := 0; i < len(list); i++ {
		if list[i] == s {
			return true
		}
	}
	return false
}
