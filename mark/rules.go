package mark

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// rule is a compiled Rule. A condition whose field is empty is not checked.
type rule struct {
	name      string
	lane      string
	users     map[string]struct{}
	path      pathMatch
	methods   []string
	pairs     []pair // headers (by canonical key), then query parameters, then cookies
	sourceIPs ipSet
	versions  constraint
	// versionRule numbers the rules with a versions condition, for versionVerdict.holds.
	versionRule int
	window      window
	threshold   uint64     // buckets out of 10000 that match, without ramp
	ramp        []rampStep // replaces threshold when set
	salt        string     // salt + ":"
	checks      []int      // the conditions set, in the order matchRule checks them
	how         int        // how the rule is checked once a candidate: matchAlways, ...
}

// How a candidate rule is checked, set by the index once it has dropped the rule's anchor check.
// The request path checks the first two kinds itself, saving calls under Yaegi.
const (
	matchAlways     = iota // no condition left: the rule matches
	matchByPercent         // a percentage is the only condition left, without ramp
	matchByVersions        // a version range is the only condition left
	matchByChecks          // matchRule checks the conditions left
)

// howToCheck returns how the candidate rule r is checked.
func howToCheck(r *rule) int {
	switch {
	case len(r.checks) == 0:
		return matchAlways
	case len(r.checks) == 1 && r.checks[0] == checkPercent && len(r.ramp) == 0:
		return matchByPercent
	case len(r.checks) == 1 && r.checks[0] == checkVersions:
		return matchByVersions
	}
	return matchByChecks
}

// Conditions a rule checks, cheapest first.
const (
	checkWindow = iota
	checkMethods
	checkPathPrefix
	checkPathExact
	checkPathPattern // contains or regex
	checkPairs
	checkSourceIPs
	checkUsers
	checkVersions
	checkPercent
)

// pair is a named request field that must be present with value, or with any value when
// present is set. slot is the field's slot in the handler's fieldTable, or -1.
type pair struct {
	kind    int
	name    string
	value   string
	present bool
	slot    int
}

// Kinds of path conditions; pathAny, the zero value, is no path condition.
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

// build compiles cfg into r; at is the rule's field path for errors, such as "rules[2]".
// Fields the rule reads by name are numbered in fields.
func (r *rule) build(at string, cfg *Rule, fields *fieldTable) error {
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
			user := cfg.Users[i]
			if user == "" {
				return fmt.Errorf("%s.users[%d]: must not be empty", at, i)
			}
			if strings.TrimSpace(user) != user {
				// "1001, 1002" (a label, or one string where a list is expected) decodes to
				// "1001" and " 1002", which a header's identity (trimmed) never matches.
				return fmt.Errorf("%s.users[%d]: %q: spaces around a user ID (a list written as \"a, b\"? write \"a,b\" or a YAML list)", at, i, user)
			}
			if len(user) > maxIDLen {
				return fmt.Errorf("%s.users[%d]: %q: longer than %d bytes, the longest user ID mark reads", at, i, user, maxIDLen)
			}
			r.users[user] = struct{}{}
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
	headers, err := newPairs(fromHeader, cfg.Headers, fields)
	if err != nil {
		return fmt.Errorf("%s.headers%w", at, err)
	}
	query, err := newPairs(fromQuery, cfg.Query, fields)
	if err != nil {
		return fmt.Errorf("%s.query%w", at, err)
	}
	cookies, err := newPairs(fromCookie, cfg.Cookies, fields)
	if err != nil {
		return fmt.Errorf("%s.cookies%w", at, err)
	}
	r.pairs = append(headers, query...)
	r.pairs = append(r.pairs, cookies...)
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
	r.checks = checksOf(r, cfg)
	if len(r.checks) == 0 {
		return fmt.Errorf("%s: no condition (a misspelled field name is ignored by Traefik: check the names)", at)
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
	r.salt = cfg.Salt
	if r.salt == "" {
		r.salt = cfg.Name
	}
	r.salt += ":"
	return nil
}

// checksOf lists the conditions r sets, in the order they are checked.
func checksOf(r *rule, cfg *Rule) []int {
	var checks []int
	if !r.window.from.IsZero() || !r.window.until.IsZero() {
		checks = append(checks, checkWindow)
	}
	if len(r.methods) > 0 {
		checks = append(checks, checkMethods)
	}
	switch r.path.kind {
	case pathPrefix:
		checks = append(checks, checkPathPrefix)
	case pathExact:
		checks = append(checks, checkPathExact)
	case pathContains:
		checks = append(checks, checkPathPattern)
	case pathRegex:
		checks = append(checks, checkPathPattern)
	}
	if len(r.pairs) > 0 {
		checks = append(checks, checkPairs)
	}
	if len(r.sourceIPs) > 0 {
		checks = append(checks, checkSourceIPs)
	}
	if r.users != nil {
		checks = append(checks, checkUsers)
	}
	if r.versions != nil {
		checks = append(checks, checkVersions)
	}
	if cfg.Percent != nil || len(r.ramp) > 0 {
		checks = append(checks, checkPercent)
	}
	return checks
}

// newPathMatch compiles a PathMatch; errors start with the subfield, as in ".regex: ...".
func newPathMatch(cfg PathMatch) (pathMatch, error) {
	var set []string // the fields set, quoted for the error
	var m pathMatch
	if cfg.Prefix != "" {
		set = append(set, fmt.Sprintf("prefix %q", cfg.Prefix))
		if cfg.Prefix[0] != '/' {
			return m, fmt.Errorf(".prefix: %q: must start with /", cfg.Prefix)
		}
		m = pathMatch{kind: pathPrefix, value: cfg.Prefix}
	}
	if cfg.Exact != "" {
		set = append(set, fmt.Sprintf("exact %q", cfg.Exact))
		if cfg.Exact[0] != '/' {
			return m, fmt.Errorf(".exact: %q: must start with /", cfg.Exact)
		}
		m = pathMatch{kind: pathExact, value: cfg.Exact}
	}
	if len(cfg.Contains) > 0 {
		set = append(set, fmt.Sprintf("contains %q", cfg.Contains))
		for i := 0; i < len(cfg.Contains); i++ {
			if cfg.Contains[i] == "" {
				return m, fmt.Errorf(".contains[%d]: must not be empty", i)
			}
		}
		m = pathMatch{kind: pathContains, list: cfg.Contains}
	}
	if cfg.Regex != "" {
		set = append(set, fmt.Sprintf("regex %q", cfg.Regex))
		re, err := regexp.Compile(cfg.Regex)
		if err != nil {
			return m, fmt.Errorf(".regex: %q: %s", cfg.Regex, oneLine(err.Error()))
		}
		m = pathMatch{kind: pathRegex, re: re}
	}
	if len(set) > 1 {
		return m, fmt.Errorf(": %s: set only one of prefix, exact, contains and regex", strings.Join(set, ", "))
	}
	return m, nil
}

// newPairs compiles a name → value condition map on fields of kind, sorted by name so that errors
// are deterministic. Header names are checked and canonicalised; cookie names are checked.
func newPairs(kind int, m map[string]string, fields *fieldTable) ([]pair, error) {
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
		case kind == fromHeader && !isToken(name):
			return nil, fmt.Errorf("[%q]: not a valid header name", name)
		case kind == fromHeader && strings.EqualFold(name, "Host"):
			// Go's server moves Host out of the header map into Request.Host.
			return nil, fmt.Errorf("[%q]: not a request header in Traefik (it is the request's host): route by host with a Host() router rule", name)
		case kind == fromHeader && strings.Trim(value, " \t") != value:
			// Go's HTTP/1 server trims them, and HTTP/2 forbids them.
			return nil, fmt.Errorf("[%q]: %q: spaces around the value, which a request's header value does not have", name, value)
		case kind == fromCookie && !isToken(name):
			return nil, fmt.Errorf("[%q]: not a valid cookie name", name)
		case kind == fromHeader:
			name = http.CanonicalHeaderKey(name)
		}
		pairs[i] = pair{kind: kind, name: name, value: value, present: value == "*", slot: fields.slot(kind, name)}
	}
	return pairs, nil
}

// matchRule reports whether every condition of r holds for the request of d. It is one loop and
// a small switch: under Yaegi, every call allocates a slot for each expression of the called
// function, whichever branch runs. The conditions the index leaves to the rules (contains and
// regex, versions, percent, header, cookie and query values) are handled here, the others by
// matchOther.
func matchRule(r *rule, d *decision) bool {
	ok := true
	for i := 0; i < len(r.checks) && ok; i++ {
		switch check := r.checks[i]; check {
		case checkPathPattern:
			ok = matchPathPattern(r, d)
		case checkPairs:
			ok = allAccept(r, d)
		case checkVersions:
			ok = matchVersions(r, d)
		case checkPercent:
			ok = matchPercent(r, d)
		default:
			ok = matchOther(r, d, check)
		}
	}
	return ok
}

// matchOther reports whether the condition check of r holds for the request of d.
func matchOther(r *rule, d *decision, check int) bool {
	switch check {
	case checkWindow:
		return inWindow(&r.window, clock(d))
	case checkMethods:
		return containsString(r.methods, d.req.Method)
	case checkPathPrefix:
		return strings.HasPrefix(d.req.URL.Path, r.path.value)
	case checkPathExact:
		return d.req.URL.Path == r.path.value
	case checkSourceIPs:
		ip, found := clientIP(d.handler.clientIP, d.req)
		return found && inIPSet(r.sourceIPs, ip)
	}
	_, ok := r.users[userID(d)] // checkUsers
	return ok
}

// matchVersions reports whether the request of d has a version that satisfies the constraint of r.
func matchVersions(r *rule, d *decision) bool {
	return clientVerdict(d).holds[r.versionRule]
}

// matchPercent reports whether the request of d falls in the first buckets of r, as many as its
// percentage or its ramp gives: by its identity, else by its anonymous key, else (anonymous
// "random") by a fresh draw.
func matchPercent(r *rule, d *decision) bool {
	threshold := r.threshold
	if len(r.ramp) > 0 {
		threshold = rampThreshold(r.ramp, clock(d))
	}
	if id := userID(d); id != "" {
		return bucket(r.salt, id) < threshold
	}
	return anonymousInBucket(d, r.salt, threshold)
}

// matchCandidate reports whether the candidate rule r, which has conditions left, matches the
// request of d. A rule whose only condition left is a percentage, the usual gray release, is
// checked here for a request with a user ID, its bucket computed inline; any other candidate in
// matchOtherCandidate. (Under Yaegi every expression of a function costs an allocation per call:
// this saves the percentage check 12 of about 30, and costs the other candidates about 6.)
func matchCandidate(r *rule, d *decision) bool {
	if r.how == matchByPercent && d.identity != "" {
		sum := sha256.Sum256([]byte(r.salt + d.identity)) // bucket(r.salt, d.identity)
		return binary.BigEndian.Uint64(sum[:])%bucketCount < r.threshold
	}
	return matchOtherCandidate(r, d)
}

// matchOtherCandidate is matchCandidate for the other candidates: a rule whose only condition
// left is a version range, a percentage for a request without user ID, and any other rule.
func matchOtherCandidate(r *rule, d *decision) bool {
	switch r.how {
	case matchByVersions:
		return clientVerdict(d).holds[r.versionRule]
	case matchByPercent:
		return anonymousInBucket(d, r.salt, r.threshold)
	}
	return matchRule(r, d)
}

// allAccept reports whether the request of d satisfies every pair of r.
func allAccept(r *rule, d *decision) bool {
	for i := 0; i < len(r.pairs); i++ {
		p := &r.pairs[i]
		v, ok := fieldValue(d, p)
		if !ok || !p.present && v != p.value {
			return false
		}
	}
	return true
}

// matchPathPattern reports whether the path of the request of d satisfies the contains or regex
// PathMatch of r.
func matchPathPattern(r *rule, d *decision) bool {
	m, path := &r.path, d.req.URL.Path
	if m.kind == pathRegex {
		return m.re.MatchString(path)
	}
	for i := 0; i < len(m.list); i++ {
		if strings.Contains(path, m.list[i]) {
			return true
		}
	}
	return false
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

// oneLine returns msg, an error message of a package that quotes the value at fault between
// backquotes as it is (regexp: "missing closing ): `a\n(`"), with that value quoted as Go does when
// msg holds a control character, so that an error of New stays on one line in Traefik's log.
func oneLine(msg string) string {
	if strings.IndexFunc(msg, isControl) < 0 {
		return msg
	}
	if i := strings.IndexByte(msg, '`'); i >= 0 && i < len(msg)-1 && msg[len(msg)-1] == '`' {
		return msg[:i] + strconv.Quote(msg[i+1:len(msg)-1])
	}
	return strconv.Quote(msg)
}

// isControl reports whether c is an ASCII control character, which a header value cannot hold.
func isControl(c rune) bool {
	return c < 0x20 || c == 0x7f
}
