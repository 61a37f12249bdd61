package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Measurement is one variant's load result.
type Measurement struct {
	// Key names the variant: "a", "c-miss", "e-one", ...
	Key string
	// Label says what the variant is.
	Label string
	Result
}

// RatioDef defines a throughput ratio between two variants and its targets.
type RatioDef struct {
	// Label names the ratio in the report and the chart.
	Label string
	// Num and Den are variant keys: the ratio is Num's requests/s over Den's.
	Num, Den string
	// Target is the smallest acceptable ratio; 0 means the ratio is context only.
	Target float64
	// P99Slack, when not 0, is how much Num's p99 may exceed Den's.
	P99Slack time.Duration
}

// Ratio is a RatioDef with its measured value.
type Ratio struct {
	RatioDef
	// Value is Num's requests/s over Den's.
	Value float64
	// P99Delta is Num's p99 minus Den's.
	P99Delta time.Duration
}

// Holds reports whether the ratio meets its targets (always true without targets).
func (r Ratio) Holds() bool {
	return r.Value >= r.Target && (r.P99Slack == 0 || r.P99Delta <= r.P99Slack)
}

// ComputeRatios evaluates defs against the results of each round, by variant key and in
// round order: in every round where both variants were measured it takes the ratio of their
// requests/s and the difference of their p99s, and it reports the median of each over those
// rounds (the mean of the two middle ones for an even count). Variants of one round run minutes apart, so
// a machine that slows down or speeds up between rounds moves both. A ratio whose variants were
// never measured in the same round is left out.
func ComputeRatios(rounds map[string][]Result, defs []RatioDef) []Ratio {
	var out []Ratio
	for _, d := range defs {
		num, den := rounds[d.Num], rounds[d.Den]
		var values []float64
		var deltas []time.Duration
		for i := 0; i < len(num) && i < len(den); i++ {
			if den[i].RPS > 0 {
				values = append(values, num[i].RPS/den[i].RPS)
				deltas = append(deltas, num[i].P99-den[i].P99)
			}
		}
		if len(values) == 0 {
			continue
		}
		sort.Float64s(values)
		sort.Slice(deltas, func(i, j int) bool { return deltas[i] < deltas[j] })
		hi, lo := len(values)/2, (len(values)-1)/2
		out = append(out, Ratio{RatioDef: d, Value: (values[lo] + values[hi]) / 2, P99Delta: (deltas[lo] + deltas[hi]) / 2})
	}
	return out
}

// Report is everything BENCHMARKS.md shows.
type Report struct {
	Date      time.Time
	CPUs      int
	CPUModel  string
	Kernel    string
	GoVersion string
	Traefik   string
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end of the load runs:
	// anything above ~1 before the run means other work shared the machine.
	LoadBefore, LoadAfter string
	// Source is the graylane revision measured, e.g. "commit abc1234 with uncommitted changes in mark".
	Source       string
	Tool         string
	Load         string // the load command, without URL and headers
	Command      string // how the report was produced
	Duration     time.Duration
	Warmup       time.Duration
	Rounds       int
	Rules        RuleSet
	Measurements []Measurement
	// Missing lists the variants that could not be measured, with the reason.
	Missing []string
	Ratios  []Ratio
	// MicroCompiled and MicroYaegi are the outputs of the plugins' micro-benchmarks;
	// MicroLoaded is that of BenchmarkTraefikLoaded (e2e), the plugins as Traefik loads them.
	MicroCompiled, MicroYaegi, MicroLoaded string
}

// Markdown renders the report as BENCHMARKS.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Written by `make bench` (`scripts/bench.sh`, which runs `TestBench` in `e2e/bench`); do not edit by hand.\n")
	w("Every figure below comes from one run on one machine: compare the ratios, not the absolute numbers.\n\n")
	w("![throughput ratios](docs/bench.svg)\n\n")

	w("## Setup\n\n")
	w("- Date: %s\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	w("- Machine: %d CPUs (`nproc`), %s, Linux %s, %s\n", r.CPUs, r.CPUModel, r.Kernel, r.GoVersion)
	w("- Source: %s\n", r.Source)
	if r.LoadBefore != "" {
		w("- Machine load average (1, 5, 15 min) before the load runs: %s; after: %s — other work on the machine "+
			"during the run shows here and makes every figure noisier\n", r.LoadBefore, r.LoadAfter)
	}
	w("- Traefik: %s, built from source by `scripts/build-traefik.sh`; log level ERROR, no access log\n", r.Traefik)
	w("- Load: %s, `%s`, keep-alive, %s per variant after a %s warm-up", r.Tool, r.Load, r.Duration, r.Warmup)
	if r.Rounds > 1 {
		w("; %d rounds, each variant shows its median round by requests/s (the faster middle one for an even count)", r.Rounds)
	}
	w("\n- Command: `%s`\n", r.Command)
	w("- Everything runs on loopback and shares the same %d cores: the load generator (2 threads), Traefik "+
		"and the backend compete for CPU, so absolute requests/s are far below what a dedicated machine gives, "+
		"and the latencies include time spent waiting for a core. One Traefik runs at a time.\n", r.CPUs)
	w("- Backend: one static Go HTTP server process (3-byte body) for every variant, listening on two ports: " +
		"the router's service uses the first, the lanes (and the canary service of variant b) the second.\n")
	w("- Rule set of c and d: %d mark rules — %d users rules listing %d users in all, %d path rules "+
		"(prefix, exact, contains, regex), and a %g %% sticky percent rule last. The *miss* request (user `%s`, "+
		"path `%s`) matches no rule, so every rule the index cannot rule out is checked, the percent rule's SHA-256 included; the *lane* "+
		"request (user `%s`) matches the last users rule and goes to lane `%s`.\n\n",
		len(r.Rules.Rules), r.userRules(), r.Rules.Users, len(r.Rules.Rules)-r.userRules()-1, percentShare,
		r.Rules.MissUser, r.Rules.Path, r.Rules.LaneUser, r.Rules.LaneName)

	w("## Results\n\n")
	w("Traefik CPU = the CPU time (user + system) the Traefik process used per request during the measured run, " +
		"read from /proc: it depends less than requests/s on what else the machine does.\n\n")
	w("| variant | what | requests/s | p50 | p99 | errors | Traefik CPU |\n|---|---|---:|---:|---:|---:|---:|\n")
	for _, m := range r.Measurements {
		cpu := "—"
		if m.CPUPerRequest > 0 {
			cpu = fmt.Sprintf("%.0f µs", float64(m.CPUPerRequest)/float64(time.Microsecond))
		}
		w("| %s | %s | %.0f | %s | %s | %d | %s |\n", m.Key, m.Label, m.RPS, ms(m.P50), ms(m.P99), m.Errors, cpu)
	}
	for _, m := range r.Missing {
		w("\nNot measured: %s\n", m)
	}

	w("\n## Ratios\n\n")
	w("Throughput ratio = requests/s of the first variant over the second. p99 Δ = first p99 minus second p99. " +
		"Both are computed in each round, between the two variants' runs of that round, and the median over the " +
		"rounds is shown, so they can differ from the ratios of the medians in the table above.\n\n")
	w("| ratio | throughput | target | p99 Δ | p99 target | holds |\n|---|---:|---:|---:|---:|:---:|\n")
	for _, q := range r.Ratios {
		target, p99Target, holds := "—", "—", "—"
		if q.Target > 0 {
			target = fmt.Sprintf("≥ %.2f", q.Target)
		}
		if q.P99Slack > 0 {
			p99Target = "≤ +" + ms(q.P99Slack)
		}
		if q.Target > 0 || q.P99Slack > 0 {
			holds = "yes"
			if !q.Holds() {
				holds = "**no**"
			}
		}
		w("| %s | %.3f | %s | %s | %s | %s |\n", q.Label, q.Value, target, signedMS(q.P99Delta), p99Target, holds)
	}

	w("\n## Micro-benchmarks\n\n")
	w("The plugins' own benchmarks, run by `make bench` before the load runs.\n\n")
	w("Compiled: `go test -run '^$' -bench . -benchmem ./mark ./dispatch`\n\n```\n%s\n```\n\n", strings.TrimSpace(r.MicroCompiled))
	w("Interpreted by Yaegi: `./scripts/yaegi-test.sh -run='^$' -bench=. -benchtime=2000x ./mark ./dispatch` "+
		"(the benchmark loops and the next handlers are interpreted too)\n\n```\n%s\n```\n\n", strings.TrimSpace(r.MicroYaegi))
	w("As Traefik runs them: `cd e2e && go test -run '^$' -bench TraefikLoaded -benchtime=20000x .` — the plugins "+
		"loaded by Traefik's own plugin loader (Yaegi, standard library symbols) and called from compiled code, with "+
		"the rule set above; do-nothing is the load benchmark's do-nothing plugin, the interpreter floor, and "+
		"do-nothing+proxy the same in front of a compiled httputil.ReverseProxy, the floor of a lane request\n\n```\n%s\n```\n",
		strings.TrimSpace(r.MicroLoaded))
	return b.String()
}

func (r *Report) userRules() int {
	n := 0
	for _, rule := range r.Rules.Rules {
		if _, ok := rule["users"]; ok {
			n++
		}
	}
	return n
}

// ms writes a latency in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func signedMS(d time.Duration) string {
	if d >= 0 {
		return "+" + ms(d)
	}
	return "−" + ms(-d)
}

// SVG draws the throughput ratios as a horizontal bar chart: plain SVG text, one bar per
// ratio, green when it meets its targets, red when it does not, grey when it has none, with
// a line at 1.0 and a tick at each target.
func SVG(ratios []Ratio, subtitle string) string {
	const (
		width   = 760
		labelW  = 270
		barX    = labelW + 10
		barMaxW = width - barX - 70
		rowH    = 26
		barH    = 16
		top     = 76
	)
	scale := 1.2
	for _, q := range ratios {
		scale = math.Max(scale, q.Value*1.05)
	}
	x := func(v float64) float64 { return barX + v/scale*barMaxW }
	height := top + rowH*len(ratios) + 50

	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	w(`<text x="10" y="22" font-size="15" font-weight="bold">graylane throughput ratios (requests/s), higher is better</text>` + "\n")
	w(`<text x="10" y="40" fill="#555555">%s</text>`+"\n", esc(subtitle))
	for v := 0.0; v <= scale; v += 0.25 {
		stroke, dash := "#dddddd", ""
		if v == 1 {
			stroke, dash = "#333333", ` stroke-dasharray="4 3"`
		}
		w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"%s/>`+"\n", x(v), top-8, x(v), top+rowH*len(ratios), stroke, dash)
		w(`<text x="%.1f" y="%d" text-anchor="middle" fill="#555555">%.2f</text>`+"\n", x(v), top-12, v)
	}
	for i, q := range ratios {
		y := top + i*rowH
		fill := "#9e9e9e"
		if q.Target > 0 || q.P99Slack > 0 {
			fill = "#2e7d32"
			if !q.Holds() {
				fill = "#c62828"
			}
		}
		w(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW, y+barH-3, esc(q.Label))
		w(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", barX, y, x(q.Value)-barX, barH, fill)
		w(`<text x="%.1f" y="%d">%.3f</text>`+"\n", x(q.Value)+4, y+barH-3, q.Value)
		if q.Target > 0 {
			w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000000" stroke-width="2"/>`+"\n", x(q.Target), y-3, x(q.Target), y+barH+3)
		}
	}
	ly := top + rowH*len(ratios) + 20
	w(`<rect x="10" y="%d" width="12" height="12" fill="#2e7d32"/><text x="28" y="%d">meets target</text>`+"\n", ly, ly+10)
	w(`<rect x="130" y="%d" width="12" height="12" fill="#c62828"/><text x="148" y="%d">misses target</text>`+"\n", ly, ly+10)
	w(`<rect x="260" y="%d" width="12" height="12" fill="#9e9e9e"/><text x="278" y="%d">context, no target</text>`+"\n", ly, ly+10)
	w(`<line x1="410" y1="%d" x2="410" y2="%d" stroke="#000000" stroke-width="2"/><text x="418" y="%d">target (red also when p99 is over its limit)</text>`+"\n", ly-2, ly+14, ly+10)
	w("</svg>\n")
	return b.String()
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
