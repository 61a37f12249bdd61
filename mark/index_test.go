package mark_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/graylane/graylane/mark"
)

// The values random rules and requests are drawn from: small pools, so that rules overlap.
var (
	randUsers    = []string{"u0", "u1", "u2", "u3"}
	randPaths    = []string{"/", "/a", "/a/", "/a/b", "/ab", "/b/c", "/a/b/c"}
	randContains = []string{"a", "b/", "c"}
	randRegexes  = []string{"^/a", "b$", "^/[ab]/", "^/b|c", "(?i)^/A/", "(^/a)|(^/b$)", `\A/b`, "^/a/|^/b", "^(?:/a|/b)/c$", "^"}
	randMethods  = []string{"GET", "POST", "PUT"}
	randValues   = []string{"1", "2", "*"}
	randPercents = []float64{0, 30, 50, 100}
	randVersions = []string{">=2.0.0", "<1.5.0", ">=1.2.0, <2.0.0"}
	randClients  = []string{"1.2.3", "2.0.0", "1.6.0", "bad"}
)

// pick returns a random element of list.
func pick(rnd *rand.Rand, list []string) string {
	return list[rnd.Intn(len(list))]
}

// randomRule returns a rule with a random set of conditions, at least one.
func randomRule(rnd *rand.Rand, i int) mark.Rule {
	r := mark.Rule{Name: "r" + strconv.Itoa(i), Lane: "l" + strconv.Itoa(i%3)}
	for conditions := 0; conditions == 0; {
		if rnd.Intn(3) == 0 {
			r.Users = []string{pick(rnd, randUsers), pick(rnd, randUsers)}
			conditions++
		}
		switch rnd.Intn(6) {
		case 0:
			r.Path.Prefix = pick(rnd, randPaths)
			conditions++
		case 1:
			r.Path.Exact = pick(rnd, randPaths)
			conditions++
		case 2:
			r.Path.Contains = []string{pick(rnd, randContains), pick(rnd, randContains)}
			conditions++
		case 3:
			r.Path.Regex = pick(rnd, randRegexes)
			conditions++
		}
		if rnd.Intn(4) == 0 {
			r.Methods = []string{pick(rnd, randMethods)}
			conditions++
		}
		if rnd.Intn(3) == 0 {
			r.Headers = map[string]string{"x-h": pick(rnd, randValues)}
			conditions++
			if rnd.Intn(3) == 0 {
				r.Headers["X-G"] = pick(rnd, randValues)
			}
		}
		if rnd.Intn(4) == 0 {
			r.Cookies = map[string]string{"c": pick(rnd, randValues)}
			conditions++
		}
		if rnd.Intn(4) == 0 {
			r.Query = map[string]string{"q": pick(rnd, randValues)}
			conditions++
		}
		if rnd.Intn(5) == 0 {
			r.Versions = pick(rnd, randVersions)
			conditions++
		}
		if rnd.Intn(5) == 0 {
			p := randPercents[rnd.Intn(len(randPercents))]
			r.Percent = &p
			conditions++
		}
	}
	return r
}

// randomRequest returns a request built from the random pools.
func randomRequest(rnd *rand.Rand) request {
	r := request{method: pick(rnd, randMethods), target: pick(rnd, randPaths)}
	if rnd.Intn(2) == 0 {
		r.target += "?q=" + pick(rnd, randValues[:2])
	}
	if rnd.Intn(4) != 0 {
		r.headers = append(r.headers, "X-User-Id", pick(rnd, randUsers))
	}
	if rnd.Intn(2) == 0 {
		r.headers = append(r.headers, "X-H", pick(rnd, randValues[:2]))
	}
	if rnd.Intn(3) == 0 {
		r.headers = append(r.headers, "X-G", pick(rnd, randValues[:2]))
	}
	if rnd.Intn(2) == 0 {
		r.headers = append(r.headers, "Cookie", "z=0; c="+pick(rnd, randValues[:2]))
	}
	if rnd.Intn(4) != 0 {
		r.headers = append(r.headers, "X-Version", pick(rnd, randClients))
	}
	return r
}

// referenceMatch is a naive evaluation of rule r for req, written from the documentation.
func referenceMatch(r *mark.Rule, req *http.Request) bool {
	user := req.Header.Get("X-User-Id")
	path := req.URL.Path
	switch {
	case r.Users != nil && !containsString(r.Users, user):
		return false
	case r.Path.Prefix != "" && !strings.HasPrefix(path, r.Path.Prefix):
		return false
	case r.Path.Exact != "" && path != r.Path.Exact:
		return false
	case r.Path.Contains != nil && !strings.Contains(path, r.Path.Contains[0]) && !strings.Contains(path, r.Path.Contains[1]):
		return false
	case r.Path.Regex != "" && !regexp.MustCompile(r.Path.Regex).MatchString(path):
		return false
	case r.Methods != nil && !containsString(r.Methods, req.Method):
		return false
	}
	for name, want := range r.Headers {
		values, ok := req.Header[http.CanonicalHeaderKey(name)]
		if !ok || want != "*" && values[0] != want {
			return false
		}
	}
	for name, want := range r.Cookies {
		c, err := req.Cookie(name)
		if err != nil || want != "*" && c.Value != want {
			return false
		}
	}
	for name, want := range r.Query {
		values, ok := req.URL.Query()[name]
		if !ok || want != "*" && values[0] != want {
			return false
		}
	}
	if r.Versions != "" && !referenceVersion(r.Versions, req.Header.Get("X-Version")) {
		return false
	}
	if r.Percent != nil {
		sum := sha256.Sum256([]byte(r.Name + ":" + user))
		if user == "" || binary.BigEndian.Uint64(sum[:8])%10000 >= uint64(*r.Percent*100) {
			return false
		}
	}
	return true
}

// referenceVersion is a naive evaluation of the constraints of randVersions for a client
// version text of three numbers.
func referenceVersion(constraint, text string) bool {
	var major, minor, patch int
	if _, err := fmt.Sscanf(text, "%d.%d.%d", &major, &minor, &patch); err != nil {
		return false
	}
	n := major*1000000 + minor*1000 + patch
	switch constraint {
	case ">=2.0.0":
		return n >= 2000000
	case "<1.5.0":
		return n < 1005000
	case ">=1.2.0, <2.0.0":
		return n >= 1002000 && n < 2000000
	}
	panic("no reference for " + constraint)
}

// containsString reports whether list holds s.
func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestIndexKeepsFirstMatch checks that the rule index changes no decision: random rule lists
// with overlapping conditions decide random requests as the naive first-match evaluation does.
func TestIndexKeepsFirstMatch(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	for c := 0; c < 100; c++ {
		cfg := mark.CreateConfig()
		cfg.Identity.Header = "X-User-Id"
		cfg.Version.Header = "X-Version"
		cfg.Anonymous = "none"
		cfg.RuleHeader = "X-Rule"
		noMatch := "-" // the lane next sees when no rule matches
		if c%2 == 1 {
			cfg.DefaultLane, noMatch = "dflt", "dflt"
		}
		n := 1 + rnd.Intn(12)
		for i := 0; i < n; i++ {
			cfg.Rules = append(cfg.Rules, randomRule(rnd, i))
		}
		h := newMark(t, cfg)
		for k := 0; k < 30; k++ {
			r := randomRequest(rnd)
			want, wantLane := "", noMatch
			for i := 0; i < len(cfg.Rules) && want == ""; i++ {
				if referenceMatch(&cfg.Rules[i], r.build()) {
					want, wantLane = cfg.Rules[i].Name, cfg.Rules[i].Lane
				}
			}
			rec := serve(h, r.build())
			if got := rec.Header().Get("X-Rule"); got != want || want == "" && rec.Header()["X-Rule"] != nil {
				t.Fatalf("config %d: rules %+v\nrequest %+v: matched %q, want %q", c, cfg.Rules, r, got, want)
			}
			if got := rec.Header().Get(laneSeen); got != wantLane {
				t.Fatalf("config %d: rules %+v\nrequest %+v: lane %q, want %q", c, cfg.Rules, r, got, wantLane)
			}
		}
	}
}

// TestQueryLikeParseQuery checks query conditions against url.ParseQuery on random raw queries,
// with and without escapes.
func TestQueryLikeParseQuery(t *testing.T) {
	parts := []string{"q=1", "q=1;x", "q", "q=", "%71=2", "q=a+b", "q=%41", "x;q=3", "", "q=%zz", "qq=1", "aq=2", "q%=1", "b=q", "+q=4"}
	rnd := rand.New(rand.NewSource(2))
	for k := 0; k < 300; k++ {
		var raw []string
		for n := rnd.Intn(4); n >= 0; n-- {
			raw = append(raw, pick(rnd, parts))
		}
		query := strings.Join(raw, "&")
		values, _ := url.ParseQuery(query)
		want := "-"
		rule := mark.Rule{Name: "any", Lane: "any", Query: map[string]string{"q": "*"}}
		if v, ok := values["q"]; ok {
			want = "exact"
			rule = mark.Rule{Name: "exact", Lane: "exact", Query: map[string]string{"q": v[0]}}
		}
		if got := laneOf(newMark(t, config(rule)), request{target: "/?" + query}); got != want {
			t.Errorf("query %q: lane %q, want %q", query, got, want)
		}
	}
}

// TestIndexManyRules checks rule numbers beyond the first words of the bitsets the candidate
// lists are built and merged from: exact-path rules, every seventh one a prefix rule instead,
// some regex rules, and a last exact rule whose path a prefix rule also matches (two keys, so
// merged lists).
func TestIndexManyRules(t *testing.T) {
	cfg := mark.CreateConfig()
	cfg.RuleHeader = "X-Rule"
	for i := 0; i < 300; i++ {
		r := mark.Rule{Name: "r" + strconv.Itoa(i), Lane: "l", Path: mark.PathMatch{Exact: "/p" + strconv.Itoa(i)}}
		switch {
		case i%50 == 49:
			r.Path = mark.PathMatch{Regex: "^/z" + strconv.Itoa(i) + "$"}
		case i%7 == 3:
			r.Path = mark.PathMatch{Prefix: "/q/" + strconv.Itoa(i)}
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	cfg.Rules = append(cfg.Rules, mark.Rule{Name: "r300", Lane: "l", Path: mark.PathMatch{Exact: "/q/2900"}},
		mark.Rule{Name: "r301", Lane: "l", Path: mark.PathMatch{Exact: "/q/3x"}})
	h := newMark(t, cfg)
	tests := []struct{ target, want string }{
		{"/q/3x", "r3"},
		{"/p0", "r0"}, {"/p63", "r63"}, {"/p64", "r64"}, {"/p254", "r254"}, {"/p256", "r256"}, {"/p298", "r298"},
		{"/q/3", "r3"}, {"/q/31", "r3"}, {"/q/290", "r290"}, {"/q/2900", "r290"}, {"/z199", "r199"}, {"/z299", "r299"},
		{"/p3", ""}, {"/p199", ""}, {"/p300", ""}, {"/z200", ""},
	}
	for _, tt := range tests {
		if got := serve(h, request{target: tt.target}.build()).Header().Get("X-Rule"); got != tt.want {
			t.Errorf("%s: matched %q, want %q", tt.target, got, tt.want)
		}
	}
}

// TestIndexPathAlternationTooLarge checks the rules whose path regexps are too large together
// for one alternation: the path filter then lets every path through to the rules' own checks.
func TestIndexPathAlternationTooLarge(t *testing.T) {
	cfg := mark.CreateConfig()
	cfg.RuleHeader = "X-Rule"
	const big = 3500 // each regexp repeats a class 1000 times: 3.5M instructions together
	for i := 0; i < big; i++ {
		cfg.Rules = append(cfg.Rules, mark.Rule{Name: "big" + strconv.Itoa(i), Lane: "l",
			Path: mark.PathMatch{Regex: "^/big" + strconv.Itoa(i) + "/[a-z]{1000}$"}})
	}
	cfg.Rules = append(cfg.Rules, mark.Rule{Name: "exact", Lane: "l", Path: mark.PathMatch{Exact: "/p"}},
		mark.Rule{Name: "contains", Lane: "l", Path: mark.PathMatch{Contains: []string{"kw"}}})
	h := newMark(t, cfg)
	tests := []struct{ target, want string }{
		{"/p", "exact"},
		{"/x/kw", "contains"},
		{"/big7/" + strings.Repeat("a", 1000), "big7"},
		{"/big7/" + strings.Repeat("a", 999), ""},
		{"/other", ""},
	}
	for _, tt := range tests {
		if got := serve(h, request{target: tt.target}.build()).Header().Get("X-Rule"); got != tt.want {
			t.Errorf("%.20s…: matched %q, want %q", tt.target, got, tt.want)
		}
	}
}
