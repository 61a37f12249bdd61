package mark_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/graylane/graylane/mark"
)

// doNothing is the interpreter floor: a middleware that sets one header and calls next, like
// the do-nothing plugins of the load benchmark.
type doNothing struct {
	next   http.Handler
	header string
	value  string
}

func (h *doNothing) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	req.Header.Set(h.header, h.value)
	h.next.ServeHTTP(rw, req)
}

// realisticConfig is the rule set of the load benchmark (e2e/bench, bench.Realistic): 80 users
// rules sharing 10,000 users, every fifth rule a path rule (prefix, exact, contains, regex in
// turn), and a last 10 % percent rule.
func realisticConfig() *mark.Config {
	cfg := mark.CreateConfig()
	cfg.Identity = mark.Identity{Header: "X-User-Id"}
	next := 200000
	for i := 0; i < 99; i++ {
		name := "rule-" + strconv.Itoa(i)
		if i%5 == 4 {
			var p mark.PathMatch
			switch (i / 5) % 4 {
			case 0:
				p.Prefix = "/beta/feature-" + strconv.Itoa(i)
			case 1:
				p.Exact = "/preview/feature-" + strconv.Itoa(i)
			case 2:
				p.Contains = []string{"/exp-" + strconv.Itoa(i) + "/"}
			default:
				p.Regex = "^/labs/f" + strconv.Itoa(i) + "/[a-z]+$"
			}
			cfg.Rules = append(cfg.Rules, mark.Rule{Name: name, Lane: "canary", Path: p})
			continue
		}
		var users []string
		for j := 0; j < 125; j++ {
			users = append(users, strconv.Itoa(next))
			next++
		}
		cfg.Rules = append(cfg.Rules, mark.Rule{Name: name, Lane: "beta", Users: users})
	}
	ten := 10.0
	cfg.Rules = append(cfg.Rules, mark.Rule{Name: "rollout", Lane: "canary", Percent: &ten, Salt: "bench-rollout"})
	return cfg
}

// realisticRequest is the load benchmark's request: no path rule matches it.
func realisticRequest(user string) *http.Request {
	return request{target: "/api/orders", headers: []string{"X-User-Id", user, "User-Agent", "bench"}}.build()
}

// BenchmarkRealisticMiss is the load benchmark's miss: guest-0 is in no users rule and outside
// the 10 %, so the percent rule's hash is computed.
func BenchmarkRealisticMiss(b *testing.B) {
	benchHandler(b, realisticConfig(), realisticRequest("guest-0"), "")
}

// BenchmarkRealisticLane is the load benchmark's lane request: a user of the last users rule.
func BenchmarkRealisticLane(b *testing.B) {
	benchHandler(b, realisticConfig(), realisticRequest("209937"), "beta")
}

// BenchmarkDoNothing measures the floor the realistic benchmarks compare with.
func BenchmarkDoNothing(b *testing.B) {
	var h http.Handler = &doNothing{next: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), header: "X-Bench-Noop", value: "a"}
	rw := &discard{header: http.Header{}}
	req := realisticRequest("guest-0")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.ServeHTTP(rw, req)
	}
}
