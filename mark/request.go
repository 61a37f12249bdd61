package mark

import (
	"math/rand"
	"net/http"
	"net/url"
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

// clock returns the time the request's rules are evaluated at, read once per request.
func clock(d *decision) time.Time {
	if d.now.IsZero() {
		d.now = time.Now()
	}
	return d.now
}

// anonymousInBucket reports whether a request without identity falls in the first threshold
// buckets of salt. At 0 % it does not look for an anonymous key, so that no sticky cookie is issued.
// The anonymous key is looked up, and a sticky cookie issued, at most once per request.
func anonymousInBucket(d *decision, salt string, threshold uint64) bool {
	if threshold == 0 {
		return false
	}
	k := d.handler.anonymous
	if k.mode == anonymousRandom {
		return uint64(rand.Int63n(bucketCount)) < threshold
	}
	if !d.anonymousDone {
		d.anonymous, d.anonymousOK = anonymousKeyFor(k, d.rw, d.req)
		d.anonymousDone = true
	}
	return d.anonymousOK && bucket(salt, d.anonymous) < threshold
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
		return cookieValue(req, name)
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

// cookieValue returns the value of the first valid cookie called name, as net/http's
// Request.Cookie finds it (the quotes of a quoted value removed), and whether there is one.
// One call into compiled code, which allocates a little: scanning the Cookie header in the
// plugin without allocating cost about 110 interpreted allocations more under Yaegi.
func cookieValue(req *http.Request, name string) (string, bool) {
	c, err := req.Cookie(name)
	if err != nil {
		return "", false
	}
	return c.Value, true
}

// queryValue returns the first value of the query parameter name in rawQuery, as url.ParseQuery
// (and so Request.URL.Query) finds it, and whether rawQuery has that parameter. Pairs that
// ParseQuery rejects are left out. One call into compiled code, which allocates its map: scanning
// the query in the plugin without allocating cost about 70 interpreted allocations more under
// Yaegi.
func queryValue(rawQuery, name string) (string, bool) {
	values, _ := url.ParseQuery(rawQuery)
	if v := values[name]; len(v) > 0 {
		return v[0], true
	}
	return "", false
}
