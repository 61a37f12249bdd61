package mark_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

// cfgFuzzRule is the fuzzed input of one rule. Lists are comma-separated (as mapstructure decodes
// a string into a slice); maps are comma-separated name=value pairs; ramp steps are at@percent.
type cfgFuzzRule struct {
	name, lane, users, versions      string
	prefix, exact, contains, regex   string
	methods, headers, cookies, query string
	sourceIPs                        string
	hasPercent                       bool
	percent                          float64
	salt, from, until, ramp          string
}

// cfgFuzzMark is the fuzzed input of FuzzNewConfig: a whole configuration, and one request.
type cfgFuzzMark struct {
	header, incoming, trustedIPs                 string
	depth                                        int
	excludedIPs                                  string
	ipv6Subnet                                   int
	idHeader, idCookie, idQuery, idClaim         string
	verHeader, verQuery                          string
	anonymous                                    string
	cookieName, cookieMaxAge, cookieSameSite     string
	cookieFlags                                  int // bit 0: secure set, 1: secure, 2: httpOnly set, 3: httpOnly
	ruleHeader, defaultLane                      string
	rules                                        int // number of rules, taken modulo 3
	r0, r1                                       cfgFuzzRule
	reqPath, reqLane, reqUser, reqVersion, reqIP string
}

// addMarkSeed adds in to the seed corpus of f, in the order of the fuzz function's parameters.
func addMarkSeed(f *testing.F, in cfgFuzzMark) {
	r0, r1 := in.r0, in.r1
	f.Add(in.header, in.incoming, in.trustedIPs, in.depth, in.excludedIPs, in.ipv6Subnet,
		in.idHeader, in.idCookie, in.idQuery, in.idClaim, in.verHeader, in.verQuery, in.anonymous,
		in.cookieName, in.cookieMaxAge, in.cookieSameSite, in.cookieFlags, in.ruleHeader, in.defaultLane, in.rules,
		r0.name, r0.lane, r0.users, r0.versions, r0.prefix, r0.exact, r0.contains, r0.regex,
		r0.methods, r0.headers, r0.cookies, r0.query, r0.sourceIPs, r0.hasPercent, r0.percent, r0.salt, r0.from, r0.until, r0.ramp,
		r1.name, r1.lane, r1.users, r1.versions, r1.prefix, r1.exact, r1.contains, r1.regex,
		r1.methods, r1.headers, r1.cookies, r1.query, r1.sourceIPs, r1.hasPercent, r1.percent, r1.salt, r1.from, r1.until, r1.ramp,
		in.reqPath, in.reqLane, in.reqUser, in.reqVersion, in.reqIP)
}

// cfgFuzzMarkSeeds are realistic configurations, the README's among them, and a few bad ones.
var cfgFuzzMarkSeeds = []cfgFuzzMark{
	{header: "X-Gray-Lane", incoming: "strip", anonymous: "cookie", cookieName: "graylane_id", cookieMaxAge: "720h",
		cookieSameSite: "Lax", idHeader: "X-User-Id", idCookie: "uid", idQuery: "uid", idClaim: "sub",
		verHeader: "X-App-Version", verQuery: "appVersion", rules: 2,
		r0:      cfgFuzzRule{name: "testers", lane: "canary", users: "1001,1002"},
		r1:      cfgFuzzRule{name: "new-app", lane: "canary", versions: ">=2.3.0, <3.0.0 || 3.1.x"},
		reqPath: "/", reqLane: "canary", reqUser: "1001", reqVersion: "2.4.0", reqIP: "10.0.0.1"},
	{rules: 2,
		r0: cfgFuzzRule{name: "beta-pages", lane: "canary", prefix: "/beta", methods: "GET,HEAD"},
		r1: cfgFuzzRule{name: "region", lane: "canary", headers: "X-Region=cn-east", cookies: "beta=1",
			query: "preview=true", sourceIPs: "192.168.0.0/16"},
		reqPath: "/beta/x", reqLane: "blue"},
	{idHeader: "X-User-Id", rules: 1, defaultLane: "stable", ruleHeader: "X-Gray-Rule",
		r0: cfgFuzzRule{name: "ten-percent", lane: "canary", hasPercent: true, percent: 10, salt: "checkout-v2",
			from: "2026-12-01T08:00:00Z",
			ramp: "2026-12-01T08:00:00Z@1,2026-12-02T08:00:00Z@10,2026-12-04T08:00:00Z@50"},
		reqPath: "/checkout", reqUser: "u-42"},
	{incoming: "trustedIPs", trustedIPs: "10.0.0.0/8,2001:db8::1", depth: 1, ipv6Subnet: 64,
		anonymous: "ip", rules: 2,
		r0:      cfgFuzzRule{name: "office", lane: "canary", sourceIPs: "203.0.113.0/24"},
		r1:      cfgFuzzRule{name: "regex", lane: "beta", regex: "^/api/v[0-9]+/", contains: ""},
		reqPath: "/api/v2/x", reqLane: "Canary", reqIP: "203.0.113.7, 10.0.0.2"},
	{incoming: "keep", excludedIPs: "10.0.0.0/8", anonymous: "random", cookieFlags: 1 | 2 | 4, cookieSameSite: "None",
		cookieMaxAge: "2592000", rules: 2,
		r0:      cfgFuzzRule{name: "kw", lane: "canary", contains: "beta,preview", until: "2027-01-01T00:00:00+08:00"},
		r1:      cfgFuzzRule{name: "half", lane: "canary", hasPercent: true, percent: 50.25},
		reqPath: "/preview/x", reqLane: "blue"},
	{anonymous: "none", rules: 1, r0: cfgFuzzRule{name: "p", lane: "canary", hasPercent: true, percent: 10}},
	{rules: 1, r0: cfgFuzzRule{name: "p", lane: "canary", hasPercent: true, percent: math.NaN()}},
	{rules: 1, r0: cfgFuzzRule{name: "p", lane: "canary", hasPercent: true, percent: math.Inf(1)}},
	{rules: 1, r0: cfgFuzzRule{name: "p", lane: "canary", hasPercent: true, percent: -1}},
	{rules: 1, r0: cfgFuzzRule{name: "p", lane: "canary", hasPercent: true, percent: 10.555}},
	{rules: 1, r0: cfgFuzzRule{name: "r", lane: "Bad Lane!", prefix: "/x"}},
	{rules: 1, r0: cfgFuzzRule{name: "r", lane: "canary", prefix: "/x", regex: "(", exact: "/y"}},
	{rules: 1, r0: cfgFuzzRule{name: "r", lane: "canary", ramp: "2026-12-02T08:00:00Z@1,2026-12-01T08:00:00Z@NaN"}},
	{rules: 1, r0: cfgFuzzRule{name: "r", lane: "canary", from: "2026-12-02T08:00:00Z", until: "2026-12-01T08:00:00z"}},
	{rules: 2, r0: cfgFuzzRule{name: "r", lane: "canary", prefix: "/a"}, r1: cfgFuzzRule{name: "r", lane: "canary", prefix: "/b"}},
	{rules: 1, r0: cfgFuzzRule{name: "r", lane: "canary", headers: "Host=x", versions: ">=2.x.y"}},
	{cookieMaxAge: "a month", cookieSameSite: "sometimes", trustedIPs: "10.0.0/8", header: "Host"},
	{verHeader: " %!"}, // "%!" in a quoted value is no formatting error
	{depth: 65, ipv6Subnet: 129, excludedIPs: "x", defaultLane: "-x", ruleHeader: "bad header"},
}

// cfgFuzzList splits a comma-separated list; the empty string is no list.
func cfgFuzzList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// cfgFuzzMap reads comma-separated name=value pairs; the empty string is no map.
func cfgFuzzMap(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// cfgFuzzFloat reads a number, NaN and Inf included; anything else is 0.
func cfgFuzzFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(f, 0) {
		return 0
	}
	return f
}

// cfgFuzzBool returns the *bool of flags bit set (nil unless it is set), valued by bit value.
func cfgFuzzBool(flags, set, value int) *bool {
	if flags&set == 0 {
		return nil
	}
	b := flags&value != 0
	return &b
}

// toRule returns the Rule r describes.
func (r cfgFuzzRule) toRule() mark.Rule {
	out := mark.Rule{Name: r.name, Lane: r.lane, Users: cfgFuzzList(r.users), Versions: r.versions,
		Path:    mark.PathMatch{Prefix: r.prefix, Exact: r.exact, Contains: cfgFuzzList(r.contains), Regex: r.regex},
		Methods: cfgFuzzList(r.methods), Headers: cfgFuzzMap(r.headers), Cookies: cfgFuzzMap(r.cookies),
		Query: cfgFuzzMap(r.query), SourceIPs: cfgFuzzList(r.sourceIPs), Salt: r.salt, From: r.from, Until: r.until}
	if r.hasPercent {
		p := r.percent
		out.Percent = &p
	}
	for _, step := range cfgFuzzList(r.ramp) {
		at, percent, _ := strings.Cut(step, "@")
		out.Ramp = append(out.Ramp, mark.RampStep{At: at, Percent: cfgFuzzFloat(percent)})
	}
	return out
}

// toConfig returns the Config in describes.
func (in cfgFuzzMark) toConfig() *mark.Config {
	cfg := &mark.Config{Header: in.header, Incoming: in.incoming, TrustedIPs: cfgFuzzList(in.trustedIPs),
		IPStrategy: mark.IPStrategy{Depth: in.depth, ExcludedIPs: cfgFuzzList(in.excludedIPs), IPv6Subnet: in.ipv6Subnet},
		Identity:   mark.Identity{Header: in.idHeader, Cookie: in.idCookie, Query: in.idQuery, JWTClaim: in.idClaim},
		Version:    mark.VersionSource{Header: in.verHeader, Query: in.verQuery},
		Anonymous:  in.anonymous,
		StickyCookie: mark.StickyCookie{Name: in.cookieName, MaxAge: in.cookieMaxAge, SameSite: in.cookieSameSite,
			Secure: cfgFuzzBool(in.cookieFlags, 1, 2), HTTPOnly: cfgFuzzBool(in.cookieFlags, 4, 8)},
		RuleHeader: in.ruleHeader, DefaultLane: in.defaultLane}
	n := in.rules % 3
	if n < 0 {
		n = -n
	}
	if n > 0 {
		cfg.Rules = append(cfg.Rules, in.r0.toRule())
	}
	if n > 1 {
		cfg.Rules = append(cfg.Rules, in.r1.toRule())
	}
	return cfg
}

// cfgFuzzMarkFields are the top-level fields a mark configuration error starts with.
var cfgFuzzMarkFields = []string{"header: ", "incoming: ", "trustedIPs", "ipStrategy.", "identity.",
	"version.", "anonymous: ", "stickyCookie.", "ruleHeader: ", "defaultLane: "}

// checkMarkErrorText fails t unless msg, an error of New for a configuration of rules rules, is
// one line that starts with a field path (input is the fuzz input, as text: a "%!" in it is no
// formatting error of the message).
func checkMarkErrorText(t testing.TB, msg string, rules int, input string) {
	t.Helper()
	if msg == "" || strings.Contains(msg, "%!") && !strings.Contains(input, "%!") ||
		strings.IndexFunc(msg, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		t.Fatalf("error %q: empty, badly formatted or not one line", msg)
	}
	for _, field := range cfgFuzzMarkFields {
		if strings.HasPrefix(msg, field) {
			return
		}
	}
	for i := 0; i < rules; i++ {
		at := "rules[" + strconv.Itoa(i) + "]"
		if strings.HasPrefix(msg, at+".") || strings.HasPrefix(msg, at+": ") {
			return
		}
	}
	t.Fatalf("error %q does not start with a field path", msg)
}

// cfgFuzzBackend records the lane header a request reaches it with.
type cfgFuzzBackend struct {
	header string
	lanes  []string
	seen   bool
}

func (b *cfgFuzzBackend) ServeHTTP(_ http.ResponseWriter, req *http.Request) {
	b.seen = true
	b.lanes = req.Header.Values(b.header)
}

// cfgFuzzLaneName matches a lane name as mark writes it: lower-case.
var cfgFuzzLaneName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// checkNewConfig builds the configuration of in; it fails t on a panic (the fuzzer's), on an
// error that does not start with a field path, or when the handler it returns fails to pass an
// ordinary request on, with or without a lane header, with one valid lane header at most.
func checkNewConfig(t testing.TB, in cfgFuzzMark) {
	t.Helper()
	cfg := in.toConfig()
	header := cfg.Header
	if header == "" {
		header = "X-Gray-Lane"
	}
	backend := &cfgFuzzBackend{header: header}
	h, err := mark.New(context.Background(), backend, cfg, "fuzz")
	if err != nil {
		checkMarkErrorText(t, err.Error(), len(cfg.Rules), fmt.Sprintf("%+v", in))
		return
	}
	for pass := 0; pass < 2; pass++ {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = in.reqPath
		req.URL.RawQuery = "uid=" + in.reqUser + "&appVersion=" + in.reqVersion + "&preview=true"
		req.Header.Set("X-Forwarded-For", in.reqIP)
		req.Header.Set("X-User-Id", in.reqUser)
		req.Header.Set("X-App-Version", in.reqVersion)
		req.Header.Set("Authorization", "Bearer "+in.reqUser)
		req.Header.Set("Cookie", "uid="+in.reqUser+"; graylane_id="+in.reqUser)
		if in.idHeader != "" {
			req.Header[http.CanonicalHeaderKey(in.idHeader)] = []string{in.reqUser}
		}
		if pass == 1 {
			req.Header[http.CanonicalHeaderKey(header)] = []string{in.reqLane}
		}
		// Two statements: Yaegi panics (reflect.New(nil)) on a tuple assignment of nil to a slice.
		backend.seen = false
		backend.lanes = nil
		h.ServeHTTP(httptest.NewRecorder(), req)
		if !backend.seen {
			t.Fatalf("pass %d: the request did not reach the next handler", pass)
		}
		if len(backend.lanes) > 1 || len(backend.lanes) == 1 && !cfgFuzzLaneName.MatchString(backend.lanes[0]) {
			t.Fatalf("pass %d: lane header %q", pass, backend.lanes)
		}
	}
	checkPathRules(t, in)
}

// checkPathRules builds a configuration of the path conditions of in's two rules alone, and
// compares the lane it gives the request path with the lane the rules' definition gives.
func checkPathRules(t testing.TB, in cfgFuzzMark) {
	t.Helper()
	rules := []cfgFuzzRule{in.r0, in.r1}
	cfg := &mark.Config{}
	for i := 0; i < len(rules); i++ {
		r := rules[i]
		cfg.Rules = append(cfg.Rules, mark.Rule{Name: "r" + strconv.Itoa(i), Lane: "l" + strconv.Itoa(i),
			Path: mark.PathMatch{Prefix: r.prefix, Exact: r.exact, Contains: cfgFuzzList(r.contains), Regex: r.regex}})
	}
	backend := &cfgFuzzBackend{header: "X-Gray-Lane"}
	h, err := mark.New(context.Background(), backend, cfg, "fuzz")
	if err != nil {
		return
	}
	want := ""
	for i := 0; i < len(rules) && want == ""; i++ {
		if cfgFuzzPathMatches(rules[i], in.reqPath) {
			want = "l" + strconv.Itoa(i)
		}
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.URL.Path = in.reqPath
	h.ServeHTTP(httptest.NewRecorder(), req)
	got := ""
	if len(backend.lanes) > 0 {
		got = backend.lanes[0]
	}
	if got != want {
		t.Fatalf("path %q, rules %+v: lane %q, want %q", in.reqPath, cfg.Rules, got, want)
	}
}

// cfgFuzzPathMatches reports whether path satisfies the path condition of r, by its definition.
func cfgFuzzPathMatches(r cfgFuzzRule, path string) bool {
	switch {
	case r.prefix != "":
		return strings.HasPrefix(path, r.prefix)
	case r.exact != "":
		return path == r.exact
	case r.contains != "":
		for _, s := range cfgFuzzList(r.contains) {
			if strings.Contains(path, s) {
				return true
			}
		}
		return false
	}
	return regexp.MustCompile(r.regex).MatchString(path)
}

func FuzzNewConfig(f *testing.F) {
	for _, in := range cfgFuzzMarkSeeds {
		addMarkSeed(f, in)
	}
	f.Fuzz(func(t *testing.T, header, incoming, trustedIPs string, depth int, excludedIPs string, ipv6Subnet int,
		idHeader, idCookie, idQuery, idClaim, verHeader, verQuery, anonymous,
		cookieName, cookieMaxAge, cookieSameSite string, cookieFlags int, ruleHeader, defaultLane string, rules int,
		name0, lane0, users0, versions0, prefix0, exact0, contains0, regex0, methods0, headers0, cookies0, query0, sourceIPs0 string,
		hasPercent0 bool, percent0 float64, salt0, from0, until0, ramp0 string,
		name1, lane1, users1, versions1, prefix1, exact1, contains1, regex1, methods1, headers1, cookies1, query1, sourceIPs1 string,
		hasPercent1 bool, percent1 float64, salt1, from1, until1, ramp1 string,
		reqPath, reqLane, reqUser, reqVersion, reqIP string) {
		checkNewConfig(t, cfgFuzzMark{header: header, incoming: incoming, trustedIPs: trustedIPs, depth: depth,
			excludedIPs: excludedIPs, ipv6Subnet: ipv6Subnet, idHeader: idHeader, idCookie: idCookie, idQuery: idQuery,
			idClaim: idClaim, verHeader: verHeader, verQuery: verQuery, anonymous: anonymous, cookieName: cookieName,
			cookieMaxAge: cookieMaxAge, cookieSameSite: cookieSameSite, cookieFlags: cookieFlags, ruleHeader: ruleHeader,
			defaultLane: defaultLane, rules: rules,
			r0: cfgFuzzRule{name: name0, lane: lane0, users: users0, versions: versions0, prefix: prefix0, exact: exact0,
				contains: contains0, regex: regex0, methods: methods0, headers: headers0, cookies: cookies0, query: query0,
				sourceIPs: sourceIPs0, hasPercent: hasPercent0, percent: percent0, salt: salt0, from: from0, until: until0, ramp: ramp0},
			r1: cfgFuzzRule{name: name1, lane: lane1, users: users1, versions: versions1, prefix: prefix1, exact: exact1,
				contains: contains1, regex: regex1, methods: methods1, headers: headers1, cookies: cookies1, query: query1,
				sourceIPs: sourceIPs1, hasPercent: hasPercent1, percent: percent1, salt: salt1, from: from1, until: until1, ramp: ramp1},
			reqPath: reqPath, reqLane: reqLane, reqUser: reqUser, reqVersion: reqVersion, reqIP: reqIP})
	})
}

func TestNewConfigSeeds(t *testing.T) {
	for _, in := range cfgFuzzMarkSeeds {
		checkNewConfig(t, in)
	}
}
