package mark

import (
	"math/rand"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Kinds of request values that rule conditions read by name.
const (
	fromHeader = iota
	fromCookie
	fromQuery
)

// maxSlots bounds the distinct named values (headers, cookies, query parameters) whose lookups
// one request caches; the rules' further names, if any, are looked up each time they are read.
const maxSlots = 32

// field is a named request value: a header (by canonical key), a cookie or a query parameter.
type field struct {
	kind int
	name string
}

// fieldTable numbers the distinct fields the rules read, so that a request looks each up once.
type fieldTable []field

// slot returns the slot number of a field, adding it to the table; -1 when the table is full.
func (t *fieldTable) slot(kind int, name string) int {
	for i := 0; i < len(*t); i++ {
		if (*t)[i].kind == kind && (*t)[i].name == name {
			return i
		}
	}
	if len(*t) == maxSlots {
		return -1
	}
	*t = append(*t, field{kind: kind, name: name})
	return len(*t) - 1
}

// decision holds what one request's rule evaluation has looked up so far, so that each value is
// read at most once per request, and only when a rule needs it.
type decision struct {
	handler       *handler
	rw            http.ResponseWriter
	req           *http.Request
	fields        []fieldSlot // by slot; nil until a rule reads a named field
	identity      string
	identityDone  bool
	verdict       *versionVerdict // nil until a rule reads the client version
	anonymous     string
	anonymousOK   bool
	anonymousDone bool
	now           time.Time
}

// fieldSlot is one named field of a request, once looked up. A decision allocates its slots
// when a rule first reads a named field: kept in the decision itself, they would cost every
// request their size under Yaegi, which allocates the whole decision.
type fieldSlot struct {
	value    string
	found    bool
	resolved bool
}

// fieldValue returns the value of the field of p and whether the request has that field at all.
func fieldValue(d *decision, p *pair) (string, bool) {
	if p.slot < 0 {
		return lookup(d.req, p.kind, p.name)
	}
	if d.fields == nil {
		d.fields = make([]fieldSlot, d.handler.fieldSlots)
	}
	f := &d.fields[p.slot]
	if !f.resolved {
		// One assignment each: Yaegi stores only the first element of some tuple assignments.
		v, ok := lookup(d.req, p.kind, p.name)
		f.value = v
		f.found = ok
		f.resolved = true
	}
	return f.value, f.found
}

// userID returns the request's user ID, or "".
func userID(d *decision) string {
	if !d.identityDone {
		d.identity = lookupIdentity(d.handler.identity, d.req)
		d.identityDone = true
	}
	return d.identity
}

// clientVerdict returns what the request's client version means for the version rules.
func clientVerdict(d *decision) *versionVerdict {
	if d.verdict == nil {
		d.verdict = lookupVerdict(d.handler.version, d.req)
	}
	return d.verdict
}

// anonymousKey returns the percentage key of a request with no identity. It is looked up, and a
// sticky cookie issued, at most once per request.
func anonymousKey(d *decision) (string, bool) {
	if !d.anonymousDone {
		d.anonymous, d.anonymousOK = anonymousKeyFor(&d.handler.anonymous, d.rw, d.req)
		d.anonymousDone = true
	}
	return d.anonymous, d.anonymousOK
}

// clock returns the time the request's rules are evaluated at, read once per request.
func clock(d *decision) time.Time {
	if d.now.IsZero() {
		d.now = time.Now()
	}
	return d.now
}

// anonymousInBucket reports whether a request without identity falls in the first threshold
// buckets of salt. At 0 % it does not look for an anonymous key, so that no sticky cookie is issued.
func anonymousInBucket(d *decision, salt string, threshold uint64) bool {
	if threshold == 0 {
		return false
	}
	if d.handler.anonymous.mode == anonymousRandom {
		return uint64(rand.Int63n(bucketCount)) < threshold
	}
	key, ok := anonymousKey(d)
	return ok && bucket(salt, key) < threshold
}

// lookup returns the value of a named request field, uncached. The cookie and query parsers
// are called only when the request has a Cookie header or a query.
func lookup(req *http.Request, kind int, name string) (string, bool) {
	if kind == fromHeader {
		values, ok := req.Header[name]
		if len(values) == 0 {
			return "", ok
		}
		return values[0], ok
	}
	if kind == fromCookie {
		if len(req.Header["Cookie"]) == 0 {
			return "", false
		}
		return cookieValue(req.Header, name)
	}
	if req.URL.RawQuery == "" {
		return "", false
	}
	return queryValue(req.URL.RawQuery, name)
}

// headerValue returns the first value of the header with canonical key key, or "".
func headerValue(h http.Header, key string) string {
	if values := h[key]; len(values) > 0 {
		return values[0]
	}
	return ""
}

// The request path leaves the scanning of cookies and queries to compiled standard library calls
// where it can: under Yaegi, an interpreted loop costs about 150 ns per byte and a call 0.5 µs.

// ows is the optional white space around cookie pairs, as textproto.TrimString trims it.
const ows = " \t\n\r"

// invalidCookieBytes replaces each byte that net/http does not accept in a cookie value (once
// unquoted) with one it accepts: a value it leaves as it is holds only accepted bytes, and then
// Replace returns the value itself without allocating. A table of 256 bytes, where strings.Trim
// with the accepted bytes as cutset would build its set on every call (150 ns against 10).
var invalidCookieBytes = newInvalidCookieBytes()

// newInvalidCookieBytes builds invalidCookieBytes.
func newInvalidCookieBytes() *strings.Replacer {
	var pairs []string
	for b := 0; b < 256; b++ {
		if !isCookieValueByte(byte(b)) {
			pairs = append(pairs, string([]byte{byte(b)}), "_")
		}
	}
	return strings.NewReplacer(pairs...)
}

// isCookieValueByte reports whether net/http accepts c in a cookie value.
func isCookieValueByte(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != ';' && c != '\\'
}

// cookieValue returns the value of the first valid cookie called name in the Cookie headers,
// found like net/http's Request.Cookie finds it but without allocating. Only the pairs that hold
// name are looked at.
func cookieValue(h http.Header, name string) (string, bool) {
	lines := h["Cookie"]
	for i := 0; i < len(lines); i++ {
		for rest := lines[i]; rest != ""; {
			pair, next, ok := nextPairWith(rest, name, ';')
			if !ok {
				break
			}
			rest = next
			pair = strings.Trim(pair, ows)
			key, value := pair, ""
			if j := strings.IndexByte(pair, '='); j >= 0 {
				key, value = pair[:j], pair[j+1:]
			}
			if strings.Trim(key, ows) != name {
				continue
			}
			if len(value) > 1 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			if invalidCookieBytes.Replace(value) == value {
				return value, true // a value net/http accepts
			}
		}
	}
	return "", false
}

// nextPairWith returns the first sep-separated pair of s that holds name, the rest of s after that
// pair, and whether there was one.
// (No named results here: Yaegi does not reset them between calls.)
func nextPairWith(s, name string, sep byte) (string, string, bool) {
	j := strings.Index(s, name)
	if j < 0 {
		return "", "", false
	}
	start := strings.LastIndexByte(s[:j], sep) + 1
	end := strings.IndexByte(s[j:], sep)
	if end < 0 {
		return s[start:], "", true
	}
	return s[start : j+end], s[j+end+1:], true
}

// queryValue returns the first value of the query parameter name in rawQuery, found like
// url.ParseQuery finds it but allocating only to unescape. Without escapes in rawQuery, only the
// pairs that hold name are looked at.
func queryValue(rawQuery, name string) (string, bool) {
	if strings.ContainsAny(rawQuery, "%+") {
		return escapedQueryValue(rawQuery, name)
	}
	for rest := rawQuery; rest != ""; {
		pair, next, ok := nextPairWith(rest, name, '&')
		if !ok {
			break
		}
		rest = next
		key, value := pair, ""
		if j := strings.IndexByte(pair, '='); j >= 0 {
			key, value = pair[:j], pair[j+1:]
		}
		if key == name && strings.IndexByte(pair, ';') < 0 {
			return value, true
		}
	}
	return "", false
}

// escapedQueryValue is queryValue for a query with escapes: every pair is unescaped and compared.
func escapedQueryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		var key, raw string
		var ok bool
		key, raw, ok, rawQuery = cutQuery(rawQuery)
		if !ok || key != name {
			continue
		}
		if value, err := url.QueryUnescape(raw); err == nil {
			return value, true
		}
	}
	return "", false
}

// cutQuery cuts the first "key=value" pair off a raw query and returns its unescaped key, its raw
// value, whether url.ParseQuery would keep it (not empty, no ';', key well escaped) and the rest.
func cutQuery(query string) (string, string, bool, string) {
	pair, rest := query, ""
	if j := strings.IndexByte(query, '&'); j >= 0 {
		pair, rest = query[:j], query[j+1:]
	}
	if pair == "" || strings.IndexByte(pair, ';') >= 0 {
		return "", "", false, rest
	}
	key, raw := pair, ""
	if j := strings.IndexByte(pair, '='); j >= 0 {
		key, raw = pair[:j], pair[j+1:]
	}
	key, err := url.QueryUnescape(key)
	return key, raw, err == nil, rest
}
