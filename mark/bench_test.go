package mark_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/graylane/graylane/mark"
)

// discard is a ResponseWriter that keeps nothing but its header map.
type discard struct {
	header http.Header
}

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// benchUsersRules is the number of users rules in benchConfig; they share 10,000 users.
const benchUsersRules = 15

// benchConfig returns 100 rules, as a large gray-release configuration might have: 15 users
// rules holding 10,000 users between them, path prefix and exact rules, header, cookie and query
// value rules, two contains rules limited to POST, a regex rule, two version rules, and a last
// 10 % rule. user-j is in users rule j mod 15; the last users rule is rules[96].
func benchConfig() *mark.Config {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Header: "X-User-Id", Cookie: "uid"}
	cfg.Version = mark.VersionSource{Header: "X-App-Version"}
	var users [benchUsersRules][]string
	for j := 0; j < 10000; j++ {
		users[j%benchUsersRules] = append(users[j%benchUsersRules], "user-"+strconv.Itoa(j))
	}
	usersRules := 0
	for i := 0; i < 99; i++ {
		n := strconv.Itoa(i)
		r := mark.Rule{Name: "rule-" + n, Lane: "lane-" + strconv.Itoa(i%5)}
		switch {
		case i == 10 || i == 50:
			r.Path = mark.PathMatch{Contains: []string{"kw" + n}}
			r.Methods = []string{"POST"}
		case i == 30:
			r.Path = mark.PathMatch{Regex: "^/re" + n + "/[0-9]+$"}
		case i == 70 || i == 90:
			r.Versions = ">=" + n + ".0.0, <" + strconv.Itoa(i+1) + ".0.0"
		case i%6 == 0:
			r.Users = users[usersRules]
			usersRules++
		case i%6 == 1:
			r.Path = mark.PathMatch{Prefix: "/r" + n + "/"}
		case i%6 == 2:
			r.Path = mark.PathMatch{Exact: "/e" + n}
		case i%6 == 3:
			r.Headers = map[string]string{"X-Region": "region-" + n}
		case i%6 == 4:
			r.Cookies = map[string]string{"beta": n}
		default:
			r.Query = map[string]string{"preview": n}
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	ten := 10.0
	cfg.Rules = append(cfg.Rules, mark.Rule{Name: "ten-percent", Lane: "canary", Percent: &ten})
	return cfg
}

// benchDecision measures one decision of the benchConfig middleware for req.
func benchDecision(b *testing.B, req *http.Request, want string) {
	benchHandler(b, benchConfig(), req, want)
}

// benchHandler measures one decision of the cfg middleware for req.
func benchHandler(b *testing.B, cfg *mark.Config, req *http.Request, want string) {
	h, err := mark.New(context.Background(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), cfg, "bench")
	if err != nil {
		b.Fatal(err)
	}
	rw := &discard{header: http.Header{}}
	h.ServeHTTP(rw, req)
	if got := req.Header.Get("X-Gray-Lane"); got != want {
		b.Fatalf("lane %q, want %q", got, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.ServeHTTP(rw, req)
	}
}

// benchRequest returns a request that matches none of the first 99 rules of benchConfig unless
// user is in a users rule.
func benchRequest(user string) *http.Request {
	req := request{target: "/shop/items?page=2&preview=no", headers: []string{
		"X-User-Id", user, "X-App-Version", "2.3.4-rc.1", "X-Region", "eu-west",
		"Cookie", "session=abc; beta=no", "User-Agent", "bench",
	}}.build()
	return req
}

// The percentage buckets (salt "ten-percent") of the users in the benchmarks: visitor-1 is in
// bucket 8411, outside the 10 % rule, and visitor-28 in bucket 443, inside it.

func BenchmarkDecisionMiss(b *testing.B) {
	benchDecision(b, benchRequest("visitor-1"), "")
}

func BenchmarkDecisionHitLastUsersRule(b *testing.B) {
	benchDecision(b, benchRequest("user-14"), "lane-1")
}

func BenchmarkDecisionHitFirstRule(b *testing.B) {
	benchDecision(b, benchRequest("user-0"), "lane-0")
}

func BenchmarkDecisionHitPercent(b *testing.B) {
	benchDecision(b, benchRequest("visitor-28"), "canary")
}

// BenchmarkDecisionNoRules measures the fixed cost of the request path: an identity source, no rules.
func BenchmarkDecisionNoRules(b *testing.B) {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Header: "X-User-Id"}
	benchHandler(b, cfg, benchRequest("visitor-28"), "")
}

// BenchmarkDecisionPercentOnly measures one 10 % rule evaluated for a request with a user ID.
func BenchmarkDecisionPercentOnly(b *testing.B) {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Header: "X-User-Id"}
	ten := 10.0
	cfg.Rules = []mark.Rule{{Name: "ten-percent", Lane: "canary", Percent: &ten}}
	benchHandler(b, cfg, benchRequest("visitor-28"), "canary")
}

// BenchmarkCookieIdentity measures a decision whose user ID is read from a cookie among others,
// as on a site that keeps its users' ID in a session cookie, for a user of a users rule.
func BenchmarkCookieIdentity(b *testing.B) {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Cookie: "uid"}
	cfg.Rules = []mark.Rule{{Name: "testers", Lane: "canary", Users: []string{"user-7", "user-8"}}}
	req := request{target: "/shop/items", headers: []string{
		"Cookie", "session=0f3c9a7e21b44d5e; theme=dark; uid=user-7; consent=yes",
	}}.build()
	benchHandler(b, cfg, req, "canary")
}

// BenchmarkQueryIdentity measures a decision whose user ID is read from a query parameter among
// others, for a user of a users rule.
func BenchmarkQueryIdentity(b *testing.B) {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Query: "uid"}
	cfg.Rules = []mark.Rule{{Name: "testers", Lane: "canary", Users: []string{"user-7", "user-8"}}}
	req := request{target: "/shop/items?page=2&sort=price&uid=user-7&view=grid"}.build()
	benchHandler(b, cfg, req, "canary")
}

// BenchmarkAnonymousSticky measures a 50 % rule for a visitor without identity who returns with
// the sticky cookie mark issued on the first visit, among other cookies.
func BenchmarkAnonymousSticky(b *testing.B) {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Header: "X-User-Id"}
	half := 50.0
	cfg.Rules = []mark.Rule{{Name: "half", Lane: "canary", Percent: &half}}
	req := request{target: "/shop/items", headers: []string{
		"Cookie", "session=0f3c9a7e21b44d5e; " + cfg.StickyCookie.Name + "=0123456789abcdef0123456789abcdef; theme=dark",
	}}.build()
	benchHandler(b, cfg, req, "canary")
}
