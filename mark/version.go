package mark

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// version is a semantic version. Build metadata is dropped: it plays no part in ordering.
type version struct {
	major, minor, patch uint64
	pre                 string // dot-separated pre-release identifiers, "" for a release
}

// partial is a version as a constraint writes it: parts counts the numbers given before any
// wildcard ("1.2.x" and "1.2" both give 2), wild tells that a wildcard x, X or * was written.
type partial struct {
	v     version
	parts int
	wild  bool
}

// maxDigits bounds a version number so that it fits in a uint64, with room to add one.
const maxDigits = 18

// parseVersion parses a client version: an optional v, one to three dot-separated numbers (missing
// ones are 0), an optional -pre-release and an optional +build. It does not allocate.
func parseVersion(s string) (version, bool) {
	p, ok := parsePartial(s)
	if !ok || p.wild {
		return version{}, false
	}
	return p.v, true
}

// parsePartial parses a version that may end in wildcards, as in 1.2.x, 1.x or *.
func parsePartial(s string) (partial, bool) {
	var p partial
	if s != "" && (s[0] == 'v' || s[0] == 'V') {
		s = s[1:]
	}
	if i := strings.IndexByte(s, '+'); i >= 0 {
		if !validIdentifiers(s[i+1:]) {
			return p, false
		}
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		p.v.pre = s[i+1:]
		if !validIdentifiers(p.v.pre) {
			return p, false
		}
		s = s[:i]
	}
	if s == "" {
		return p, false
	}
	for k := 0; s != ""; k++ {
		part := s
		if i := strings.IndexByte(s, '.'); i >= 0 {
			part, s = s[:i], s[i+1:]
			if s == "" {
				return p, false
			}
		} else {
			s = ""
		}
		if k == 3 {
			return p, false
		}
		if part == "x" || part == "X" || part == "*" {
			p.wild = true
			continue
		}
		n, ok := parseNumber(part)
		if !ok || p.wild {
			return p, false
		}
		switch k {
		case 0:
			p.v.major = n
		case 1:
			p.v.minor = n
		default:
			p.v.patch = n
		}
		p.parts++
	}
	return p, !p.wild || p.v.pre == ""
}

// parseNumber parses a version number of at most maxDigits decimal digits.
func parseNumber(s string) (uint64, bool) {
	if s == "" || len(s) > maxDigits {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	return n, true
}

// validIdentifiers reports whether s is a non-empty dot-separated list of non-empty identifiers
// made of ASCII letters, digits and hyphens.
func validIdentifiers(s string) bool {
	if s == "" {
		return false
	}
	empty := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if empty {
				return false
			}
			empty = true
		case isAlnum(c) || c == '-':
			empty = false
		default:
			return false
		}
	}
	return !empty
}

// compareVersions returns -1, 0 or 1 as a sorts before, with or after b.
func compareVersions(a, b *version) int {
	if a.major == b.major && a.minor == b.minor && a.patch == b.patch {
		return comparePre(a.pre, b.pre)
	}
	if a.major < b.major || a.major == b.major && (a.minor < b.minor || a.minor == b.minor && a.patch < b.patch) {
		return -1
	}
	return 1
}

// compareNumbers returns -1, 0 or 1 as a is less than, equal to or greater than b.
func compareNumbers(a, b uint64) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// comparePre orders pre-releases: a release ("") sorts after any pre-release; identifiers are
// compared in turn, numbers numerically and before words, and a shorter list sorts first.
func comparePre(a, b string) int {
	if a == b {
		return 0
	}
	if a == "" {
		return 1
	}
	if b == "" {
		return -1
	}
	for a != "" && b != "" {
		x, y := a, b
		if i := strings.IndexByte(a, '.'); i >= 0 {
			x, a = a[:i], a[i+1:]
		} else {
			a = ""
		}
		if i := strings.IndexByte(b, '.'); i >= 0 {
			y, b = b[:i], b[i+1:]
		} else {
			b = ""
		}
		if c := compareIdentifiers(x, y); c != 0 {
			return c
		}
	}
	if a == "" && b == "" {
		return 0
	}
	if a == "" {
		return -1
	}
	return 1
}

// compareIdentifiers compares two pre-release identifiers.
func compareIdentifiers(x, y string) int {
	xNum, yNum := isNumeric(x), isNumeric(y)
	if xNum && yNum {
		x, y = strings.TrimLeft(x, "0"), strings.TrimLeft(y, "0")
		if len(x) != len(y) {
			return compareNumbers(uint64(len(x)), uint64(len(y)))
		}
		return strings.Compare(x, y)
	}
	if xNum {
		return -1
	}
	if yNum {
		return 1
	}
	return strings.Compare(x, y)
}

// isNumeric reports whether s is made of digits only.
func isNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Comparison operators of a compiled constraint term.
const (
	opNone = iota // matches nothing
	opAny         // matches every version
	opEQ
	opNE
	opGT
	opGE
	opLT
	opLE
	opIn  // a <= v < b
	opOut // v < a or v >= b
)

// term is one comparison of a constraint.
type term struct {
	op   int
	a, b version
}

// constraint is a compiled version constraint: it holds when every term of any one group holds.
type constraint [][]term

// parseConstraint compiles a constraint such as ">=2.3.0, <3.0.0 || 3.1.x".
func parseConstraint(s string) (constraint, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty constraint")
	}
	alternatives := strings.Split(s, "||")
	c := make(constraint, len(alternatives))
	for i := 0; i < len(alternatives); i++ {
		comparisons := strings.Split(alternatives[i], ",")
		for j := 0; j < len(comparisons); j++ {
			text := strings.TrimSpace(comparisons[j])
			if text == "" {
				return nil, errors.New("empty comparison (around ',' or '||')")
			}
			terms, err := parseComparison(text)
			if err != nil {
				return nil, err
			}
			c[i] = append(c[i], terms...)
		}
	}
	return c, nil
}

// parseComparison compiles one operator and version, such as ">=2.3", "~1.2" or "3.1.x".
func parseComparison(s string) ([]term, error) {
	n := 0
	for n < len(s) && strings.IndexByte("=!<>~^", s[n]) >= 0 {
		n++
	}
	op, text := s[:n], strings.TrimSpace(s[n:])
	p, ok := parsePartial(text)
	if !ok {
		return nil, fmt.Errorf("bad version %q", text)
	}
	switch op {
	case "~":
		return rangeTerms("", p.v, tildeEnd(&p)), nil
	case "^":
		return rangeTerms("", p.v, caretEnd(&p)), nil
	case "", "=", "!=", ">", ">=", "<", "<=":
	default:
		return nil, fmt.Errorf("bad operator %q", op)
	}
	if p.wild {
		return rangeTerms(op, p.v, wildcardEnd(&p)), nil
	}
	switch op {
	case "!=":
		return []term{{op: opNE, a: p.v}}, nil
	case ">":
		return []term{{op: opGT, a: p.v}}, nil
	case ">=":
		return []term{{op: opGE, a: p.v}}, nil
	case "<":
		return []term{{op: opLT, a: p.v}}, nil
	case "<=":
		return []term{{op: opLE, a: p.v}}, nil
	}
	return []term{{op: opEQ, a: p.v}}, nil
}

// rangeTerms applies op to the range from lo up to (not including) end; a nil end means a range
// with no end, which only "*" gives.
func rangeTerms(op string, lo version, end *version) []term {
	if end == nil {
		switch op {
		case "", "=", ">=", "<=":
			return []term{{op: opAny}}
		}
		return []term{{op: opNone}}
	}
	switch op {
	case "!=":
		return []term{{op: opOut, a: lo, b: *end}}
	case ">":
		return []term{{op: opGE, a: *end}}
	case ">=":
		return []term{{op: opGE, a: lo}}
	case "<":
		return []term{{op: opLT, a: lo}}
	case "<=":
		return []term{{op: opLT, a: *end}}
	}
	return []term{{op: opIn, a: lo, b: *end}}
}

// wildcardEnd returns the end of 1.2.x (1.3.0) or 1.x (2.0.0); * has none.
func wildcardEnd(p *partial) *version {
	return bump(p.v, p.parts)
}

// tildeEnd returns the end of ~1.2.3 and ~1.2 (1.3.0) or ~1 (2.0.0).
func tildeEnd(p *partial) *version {
	if p.parts > 2 {
		return bump(p.v, 2)
	}
	return bump(p.v, p.parts)
}

// caretEnd returns the end of ^1.2.3 (2.0.0), ^0.2.3 (0.3.0) or ^0.0.3 (0.0.4): the left-most
// non-zero number given, or the last number given, is bumped.
func caretEnd(p *partial) *version {
	switch {
	case p.v.major > 0 || p.parts == 1:
		return bump(p.v, 1)
	case p.v.minor > 0 || p.parts == 2:
		return bump(p.v, 2)
	}
	return bump(p.v, p.parts)
}

// bump returns the end of the range of versions whose first parts numbers are those of v: v with
// its number at position parts (1 to 3) raised by one and the following ones 0, as the spec writes
// ~1.2 as >=1.2.0 <1.3.0. The end is a release, so the pre-releases of the bumped version, which
// sort before it, are inside the range. It returns nil for parts 0, where nothing is above.
func bump(v version, parts int) *version {
	switch parts {
	case 1:
		return &version{major: v.major + 1}
	case 2:
		return &version{major: v.major, minor: v.minor + 1}
	case 3:
		return &version{major: v.major, minor: v.minor, patch: v.patch + 1}
	}
	return nil
}

// matchConstraint reports whether v satisfies c.
func matchConstraint(c constraint, v *version) bool {
	for i := 0; i < len(c); i++ {
		if allMatch(c[i], v) {
			return true
		}
	}
	return false
}

// allMatch reports whether v satisfies every term.
func allMatch(terms []term, v *version) bool {
	for i := 0; i < len(terms); i++ {
		if !matchTerm(&terms[i], v) {
			return false
		}
	}
	return true
}

// matchTerm reports whether v satisfies t. (Few calls and expressions: under Yaegi, each costs.)
func matchTerm(t *term, v *version) bool {
	if t.op == opAny || t.op == opNone {
		return t.op == opAny
	}
	c := compareVersions(v, &t.a)
	switch t.op {
	case opEQ:
		return c == 0
	case opNE:
		return c != 0
	case opGT:
		return c > 0
	case opGE:
		return c >= 0
	case opLT:
		return c < 0
	case opLE:
		return c <= 0
	case opIn:
		return c >= 0 && compareVersions(v, &t.b) < 0
	case opOut:
		return c < 0 || compareVersions(v, &t.b) >= 0
	}
	return false
}

// versionSource reads the client version from a header, or else a query parameter, and tells
// which version rules hold for it.
type versionSource struct {
	header      string // canonical header key, or ""
	query       string
	constraints []constraint // of the version rules, by rule.versionRule
	cache       *versionCache
}

// versionVerdict is what one client version text means for the version rules of a handler:
// holds[n] is set when the constraint of version rule n holds for it (none holds for a text that
// is no version).
type versionVerdict struct {
	holds []bool
}

// versionCache remembers the verdicts of the client version texts one handler has seen, so that
// the requests that follow look them up instead of parsing and comparing: clients send few
// distinct versions, and both are dear under Yaegi.
type versionCache struct {
	mu       sync.RWMutex
	verdicts map[string]*versionVerdict
}

// Bounds of the version cache: texts are cached up to maxCachedVersions of them, and only when
// they are at most maxCachedVersionLen bytes long, so that odd clients cannot make it grow.
const (
	maxCachedVersions   = 1024
	maxCachedVersionLen = 64
)

// validate checks the version source names.
func (v *VersionSource) validate() error {
	if err := checkHeaderName(v.Header); err != nil {
		return fmt.Errorf("header: %q: %w", v.Header, err)
	}
	return nil
}

// newVersionSource compiles the VersionSource configuration for the version rules of rules,
// which it numbers.
func newVersionSource(v VersionSource, rules []rule) versionSource {
	s := versionSource{query: v.Query, cache: &versionCache{verdicts: map[string]*versionVerdict{}}}
	if v.Header != "" {
		s.header = http.CanonicalHeaderKey(v.Header)
	}
	for i := 0; i < len(rules); i++ {
		if rules[i].versions != nil {
			rules[i].versionRule = len(s.constraints)
			s.constraints = append(s.constraints, rules[i].versions)
		}
	}
	return s
}

// lookupVerdict returns the verdict of the version of req: the header's first value when it is
// not empty, else the query parameter.
func lookupVerdict(s *versionSource, req *http.Request) *versionVerdict {
	text := ""
	if values := req.Header[s.header]; len(values) > 0 {
		text = values[0]
	}
	if text == "" && s.query != "" {
		text, _ = queryValue(req.URL.RawQuery, s.query)
	}
	c := s.cache
	c.mu.RLock()
	verdict := c.verdicts[text]
	c.mu.RUnlock()
	if verdict == nil {
		verdict = judgeVersion(s, text)
	}
	return verdict
}

// judgeVersion computes the verdict of a client version text, and caches it when it parses.
func judgeVersion(s *versionSource, text string) *versionVerdict {
	verdict := &versionVerdict{holds: make([]bool, len(s.constraints))}
	v, ok := parseVersion(text)
	if ok {
		for i := 0; i < len(s.constraints); i++ {
			verdict.holds[i] = matchConstraint(s.constraints[i], &v)
		}
	} else if text != "" {
		return verdict // not cached: junk must not fill the cache (no version at all is cached)
	}
	if len(text) <= maxCachedVersionLen {
		c := s.cache
		c.mu.Lock()
		if len(c.verdicts) < maxCachedVersions {
			c.verdicts[text] = verdict
		}
		c.mu.Unlock()
	}
	return verdict
}
