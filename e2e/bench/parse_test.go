package bench_test

import (
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/bench"
)

const wrkReport = `Running 10s test @ http://127.0.0.1:8080/api/orders
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.92ms    1.37ms  35.12ms   90.11%
    Req/Sec     8.76k   651.31     9.95k    72.50%
  Latency Distribution
     50%  617.00us
     75%    2.10ms
     90%    3.33ms
     99%    1.20s
  174397 requests in 10.00s, 20.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  17437.31
Transfer/sec:      2.01MB
`

const heyReport = `
Summary:
  Total:	10.0031 secs
  Slowest:	0.0412 secs
  Fastest:	0.0001 secs
  Average:	0.0021 secs
  Requests/sec:	15012.3456

Latency distribution:
  10%% in 0.0005 secs
  50%% in 0.0018 secs
  90%% in 0.0040 secs
  99%% in 0.0091 secs

Status code distribution:
  [200]	150100 responses
  [502]	3 responses

Error distribution:
  [2]	Get "http://127.0.0.1:8080/": dial tcp: connection refused
`

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		parse func(string) (bench.Result, error)
		in    string
		want  bench.Result
	}{
		{"wrk", bench.ParseWrk, wrkReport, bench.Result{RPS: 17437.31, P50: 617 * time.Microsecond, P99: 1200 * time.Millisecond, Requests: 174397, Errors: 7}},
		{"hey", bench.ParseHey, heyReport, bench.Result{RPS: 15012.3456, P50: 1800 * time.Microsecond, P99: 9100 * time.Microsecond, Requests: 150103, Errors: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if _, err := tt.parse("connection refused"); err == nil {
				t.Error("a report without figures parsed without error")
			}
		})
	}
}

func TestCommand(t *testing.T) {
	l := bench.Load{URL: "http://127.0.0.1:1/x", Headers: map[string]string{"X-User-Id": "7"}, Duration: 10 * time.Second, Connections: 32, Threads: 2}
	got := strings.Join(bench.Tool{Name: "wrk", Path: "wrk"}.Command(l), " ")
	if want := "wrk -t2 -c32 -d10s --latency -H X-User-Id: 7 http://127.0.0.1:1/x"; got != want {
		t.Errorf("wrk command %q, want %q", got, want)
	}
	got = strings.Join(bench.Tool{Name: "hey", Path: "hey"}.Command(l), " ")
	if want := "hey -z 10s -c 32 -H X-User-Id: 7 http://127.0.0.1:1/x"; got != want {
		t.Errorf("hey command %q, want %q", got, want)
	}
}

func TestRealistic(t *testing.T) {
	rs := bench.Realistic()
	if len(rs.Rules) != 100 {
		t.Fatalf("%d rules, want 100", len(rs.Rules))
	}
	if _, ok := rs.Rules[99]["percent"]; !ok {
		t.Errorf("last rule %v is not the percent rule", rs.Rules[99])
	}
	users := map[string]int{}
	paths := 0
	for i, r := range rs.Rules {
		if _, ok := r["path"]; ok {
			paths++
		}
		list, _ := r["users"].([]string)
		for _, u := range list {
			if _, dup := users[u]; dup {
				t.Fatalf("user %s listed twice", u)
			}
			users[u] = i
		}
	}
	laneRule, ok := users[rs.LaneUser]
	if len(users) != 10000 || rs.Users != 10000 {
		t.Errorf("%d users listed, Users %d; want 10000", len(users), rs.Users)
	}
	if paths < 10 {
		t.Errorf("%d path rules, want a good share", paths)
	}
	if !ok || rs.Rules[laneRule]["lane"] != rs.LaneName {
		t.Errorf("lane user %s is in rule %d, lane %q", rs.LaneUser, laneRule, rs.LaneName)
	}
	if _, listed := users[rs.MissUser]; listed || bench.InPercent("bench-rollout", rs.MissUser, 10) {
		t.Errorf("miss user %s matches a rule", rs.MissUser)
	}
}

func TestBucketSpread(t *testing.T) {
	in := 0
	for i := 0; i < 10000; i++ {
		if bench.InPercent("s", "user-"+strconv.Itoa(i), 10) {
			in++
		}
	}
	if in < 800 || in > 1200 {
		t.Errorf("%d of 10000 keys in a 10 %% share", in)
	}
}

func TestReport(t *testing.T) {
	ms := []bench.Measurement{
		{Key: "a", Label: "Traefik", Result: bench.Result{RPS: 1000, P50: time.Millisecond, P99: 3 * time.Millisecond}},
		{Key: "c-miss", Label: "graylane", Result: bench.Result{RPS: 900, P50: time.Millisecond, P99: 5 * time.Millisecond}},
		{Key: "e-two", Label: "no-ops", Result: bench.Result{RPS: 920, P50: time.Millisecond, P99: 3500 * time.Microsecond}},
	}
	defs := []bench.RatioDef{
		{Label: "c/e <&>", Num: "c-miss", Den: "e-two", Target: 0.95, P99Slack: time.Millisecond},
		{Label: "c/a", Num: "c-miss", Den: "a"},
		{Label: "unmeasured", Num: "d-miss", Den: "a"},
	}
	rounds := map[string][]bench.Result{}
	for _, m := range ms {
		rounds[m.Key] = []bench.Result{m.Result}
	}
	ratios := bench.ComputeRatios(rounds, defs)
	if len(ratios) != 2 {
		t.Fatalf("%d ratios, want 2 (the unmeasured one left out)", len(ratios))
	}
	if ratios[0].Holds() || !ratios[1].Holds() || ratios[0].P99Delta != 1500*time.Microsecond {
		t.Errorf("ratios %+v", ratios)
	}
	two := bench.ComputeRatios(map[string][]bench.Result{
		"c-miss": {{RPS: 900, P99: 4 * time.Millisecond}, {RPS: 800, P99: 6 * time.Millisecond}},
		"e-two":  {{RPS: 1000, P99: 3 * time.Millisecond}, {RPS: 1000, P99: 3 * time.Millisecond}},
	}, defs[:1])
	if len(two) != 1 || math.Abs(two[0].Value-0.85) > 1e-9 || two[0].P99Delta != 2*time.Millisecond {
		t.Errorf("ratios of two rounds %+v, want 0.85 and +2ms", two)
	}
	svg := bench.SVG(ratios, "subtitle & more")
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
	}
	md := (&bench.Report{Rules: bench.Realistic(), Measurements: ms, Ratios: ratios}).Markdown()
	for _, want := range []string{"| c-miss | graylane | 900 |", "| c/e <&> | 0.978 | ≥ 0.95 | +1.50 ms | ≤ +1.00 ms | **no** |", "docs/bench.svg"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
