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

// benchConfig returns 100 rules: 99 that look at the path, method, headers, cookies, query,
// source address and version, and a last one with 10,000 users.
func benchConfig() *mark.Config {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Header: "X-User-Id", Cookie: "uid"}
	cfg.Version = mark.VersionSource{Header: "X-App-Version"}
	for i := 0; i < 99; i++ {
		r := mark.Rule{Name: "rule-" + strconv.Itoa(i), Lane: "lane-" + strconv.Itoa(i%5)}
		switch i % 6 {
		case 0:
			r.Path = mark.PathMatch{Prefix: "/r" + strconv.Itoa(i) + "/"}
		case 1:
			r.Path = mark.PathMatch{Contains: []string{"kw" + strconv.Itoa(i)}}
			r.Methods = []string{"POST"}
		case 2:
			r.Headers = map[string]string{"X-Region": "region-" + strconv.Itoa(i)}
		case 3:
			r.Cookies = map[string]string{"beta": strconv.Itoa(i)}
		case 4:
			r.Query = map[string]string{"preview": strconv.Itoa(i)}
		default:
			r.Versions = ">=" + strconv.Itoa(i) + ".0.0, <" + strconv.Itoa(i+1) + ".0.0"
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	users := make([]string, 10000)
	for i := 0; i < len(users); i++ {
		users[i] = "user-" + strconv.Itoa(i)
	}
	cfg.Rules = append(cfg.Rules, mark.Rule{Name: "testers", Lane: "canary", Users: users})
	return cfg
}

// benchDecision measures one decision of the benchConfig middleware for req.
func benchDecision(b *testing.B, req *http.Request, want string) {
	h, err := mark.New(context.Background(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), benchConfig(), "bench")
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

// benchRequest returns a request that matches none of the first 99 rules of benchConfig.
func benchRequest(user string) *http.Request {
	req := request{target: "/shop/items?page=2&preview=no", headers: []string{
		"X-User-Id", user, "X-App-Version", "2.3.4-rc.1", "X-Region", "eu-west",
		"Cookie", "session=abc; beta=no", "User-Agent", "bench",
	}}.build()
	return req
}

func BenchmarkDecisionMiss(b *testing.B) {
	benchDecision(b, benchRequest("someone-else"), "")
}

func BenchmarkDecisionHitLastRule(b *testing.B) {
	benchDecision(b, benchRequest("user-9999"), "canary")
}

func BenchmarkDecisionHitFirstRule(b *testing.B) {
	benchDecision(b, request{target: "/r0/x"}.build(), "lane-0")
}

func BenchmarkDecisionPercent(b *testing.B) {
	cfg := benchConfig()
	all := 100.0
	cfg.Rules = append(cfg.Rules[:99:99], mark.Rule{Name: "all", Lane: "canary", Percent: &all})
	h, err := mark.New(context.Background(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), cfg, "bench")
	if err != nil {
		b.Fatal(err)
	}
	req := benchRequest("user-1")
	rw := &discard{header: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.ServeHTTP(rw, req)
	}
}
