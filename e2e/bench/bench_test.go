package bench_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/graylane/graylane/e2e/bench"
	"github.com/graylane/graylane/e2e/harness"
)

// TestMain lets the test binary double as the static backend: started again with
// GRAYLANE_BENCH_BACKEND=1, it serves instead of running tests, as a separate process.
func TestMain(m *testing.M) {
	if os.Getenv(bench.BackendEnv) == "1" {
		if err := bench.ServeBackend(); err != nil {
			fmt.Fprintln(os.Stderr, "bench backend:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Load shape of every variant.
const (
	connections = 32
	threads     = 2
)

// ratioDefs are the ratios the report shows, with the targets of the Benchmarks issue.
var ratioDefs = []bench.RatioDef{
	{Label: "c/e-two miss: mark+dispatch vs 2 no-ops", Num: "c-miss", Den: "e-two", Target: 0.95, P99Slack: time.Millisecond},
	{Label: "c/e-two lane: mark+dispatch vs 2 no-ops", Num: "c-lane", Den: "e-two", Target: 0.95, P99Slack: time.Millisecond},
	{Label: "d/e-one miss: facade vs 1 no-op", Num: "d-miss", Den: "e-one", Target: 0.95, P99Slack: time.Millisecond},
	{Label: "d/e-one lane: facade vs 1 no-op", Num: "d-lane", Den: "e-one", Target: 0.95, P99Slack: time.Millisecond},
	{Label: "c/a miss: mark+dispatch vs Traefik", Num: "c-miss", Den: "a"},
	{Label: "c/a lane: mark+dispatch vs Traefik", Num: "c-lane", Den: "a"},
	{Label: "d/a miss: facade vs Traefik", Num: "d-miss", Den: "a"},
	{Label: "d/a lane: facade vs Traefik", Num: "d-lane", Den: "a"},
	{Label: "c/b lane: graylane vs Header() router", Num: "c-lane", Den: "b-lane"},
	{Label: "b/a miss: Header() router vs Traefik", Num: "b-miss", Den: "a"},
	{Label: "b/a lane: Header() router vs Traefik", Num: "b-lane", Den: "a"},
	{Label: "e-two/a: 2 no-op Yaegi middlewares", Num: "e-two", Den: "a"},
	{Label: "e-one/a: 1 no-op Yaegi middleware", Num: "e-one", Den: "a"},
	{Label: "a/f: Traefik vs backend direct", Num: "a", Den: "f"},
}

// probe is one measured request shape and the routing it must get.
type probe struct {
	key, label string
	userID     string
	lane       bool   // answered on the backend's lane port
	seenLane   string // lane header the backend must see
	seenNoop   string // do-nothing plugin headers the backend must see
}

// group is the variants measured against one Traefik (or none, for f).
type group struct {
	name    string
	traefik bool
	opts    harness.TraefikOptions
	probes  []probe
}

// TestBench measures every variant under the same load, one after another, and writes
// BENCHMARKS.md and docs/bench.svg. It runs only with GRAYLANE_BENCH=1 (make bench).
func TestBench(t *testing.T) {
	if os.Getenv("GRAYLANE_BENCH") != "1" {
		t.Skip("load benchmark: run with GRAYLANE_BENCH=1 (make bench)")
	}
	duration := envDuration(t, "BENCH_DURATION", 10*time.Second)
	warmup := envDuration(t, "BENCH_WARMUP", 3*time.Second)
	rounds := 1
	if s := os.Getenv("BENCH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("BENCH_ROUNDS=%q: want a positive integer", s)
		}
		rounds = n
	}
	tool, err := bench.FindTool()
	if err != nil {
		t.Fatal(err)
	}
	traefikBin := harness.TraefikBinary(t)
	stable, lane := startBackend(t)
	rs := bench.Realistic()
	groups := selectGroups(t, benchGroups(rs, stable, lane), os.Getenv("BENCH_ONLY"))
	profileDir := os.Getenv("BENCH_PROFILE")

	loadBefore := loadAverage()
	results := map[string][]bench.Result{}
	labels := map[string]string{}
	var order []string
	for _, g := range groups {
		for _, p := range g.probes {
			order = append(order, p.key)
			labels[p.key] = p.label
		}
	}
	for round := 1; round <= rounds; round++ {
		// One result per variant and round, in round order; a run that fails keeps RPS 0.
		for _, key := range order {
			results[key] = append(results[key], bench.Result{})
		}
		for _, g := range groups {
			t.Run(fmt.Sprintf("round%d/%s", round, g.name), func(t *testing.T) {
				target := stable
				var tr *harness.Traefik
				if g.traefik {
					opts := g.opts
					if profileDir != "" {
						opts.ExtraStatic += "api: {debug: true}\n"
					}
					tr = harness.StartTraefik(t, opts)
					tr.WaitRouter(t, "bench", 60*time.Second)
					target = tr.URL
					defer tr.Stop() // one Traefik at a time
				}
				for _, p := range g.probes {
					url := target + rs.Path
					headers := map[string]string{"X-User-Id": p.userID}
					checkRouting(t, url, headers, p, stable, lane)
					load := bench.Load{URL: url, Headers: headers, Duration: warmup, Connections: connections, Threads: threads}
					if _, out, err := tool.Run(context.Background(), load); err != nil {
						t.Fatalf("%s warm-up: %v\n%s", p.key, err, out)
					}
					load.Duration = duration
					var profiled chan error
					if profileDir != "" && tr != nil {
						profiled = captureProfile(tr.APIURL, filepath.Join(profileDir, p.key+".pprof"), duration)
					}
					cpuBefore := processCPU(tr)
					res, out, err := tool.Run(context.Background(), load)
					if cpu := processCPU(tr) - cpuBefore; cpu > 0 && res.Requests > 0 {
						res.CPUPerRequest = cpu / time.Duration(res.Requests)
					}
					if profiled != nil {
						if perr := <-profiled; perr != nil {
							t.Errorf("%s: CPU profile: %v", p.key, perr)
						}
					}
					if err != nil {
						t.Fatalf("%s: %v\n%s", p.key, err, out)
					}
					fmt.Printf("bench: %-7s %-58s %9.0f req/s  p50 %s  p99 %s  errors %d  Traefik CPU %s/req\n",
						p.key, p.label, res.RPS, res.P50, res.P99, res.Errors, res.CPUPerRequest)
					if res.Errors > 0 {
						t.Errorf("%s: %d errors under load\n%s", p.key, res.Errors, out)
					}
					results[p.key][round-1] = res
				}
			})
		}
	}

	report := &bench.Report{
		Date:          time.Now(),
		CPUs:          runtime.NumCPU(),
		CPUModel:      cpuModel(),
		Kernel:        strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		GoVersion:     runtime.Version(),
		Traefik:       traefikVersion(traefikBin),
		Source:        sourceRevision(),
		LoadBefore:    loadBefore,
		LoadAfter:     loadAverage(),
		Tool:          tool.Version(),
		Load:          loadShape(tool, duration),
		Command:       envOr("BENCH_COMMAND", "make bench"),
		Duration:      duration,
		Warmup:        warmup,
		Rounds:        rounds,
		Rules:         rs,
		MicroCompiled: readFileOr(os.Getenv("BENCH_MICRO_COMPILED"), "(not run: start the benchmarks with make bench)"),
		MicroYaegi:    readFileOr(os.Getenv("BENCH_MICRO_YAEGI"), "(not run: start the benchmarks with make bench)"),
		MicroLoaded:   readFileOr(os.Getenv("BENCH_MICRO_LOADED"), "(not run: start the benchmarks with make bench)"),
	}
	for _, key := range order {
		var runs []bench.Result
		for _, r := range results[key] {
			if r.RPS > 0 {
				runs = append(runs, r)
			}
		}
		if len(runs) == 0 {
			report.Missing = append(report.Missing, key+" ("+labels[key]+"): its run failed, see the test log")
			continue
		}
		report.Measurements = append(report.Measurements, bench.Measurement{Key: key, Label: labels[key], Result: median(runs)})
	}
	report.Ratios = bench.ComputeRatios(results, ratioDefs)
	for _, q := range report.Ratios {
		verdict := ""
		if q.Target > 0 {
			verdict = "target holds"
			if !q.Holds() {
				verdict = "TARGET MISSED"
			}
		}
		fmt.Printf("bench: %-42s %.3f  p99 Δ %+.2f ms  %s\n", q.Label, q.Value, float64(q.P99Delta)/1e6, verdict)
	}

	if os.Getenv("BENCH_ONLY") != "" || profileDir != "" {
		fmt.Println("bench: BENCH_ONLY or BENCH_PROFILE set: BENCHMARKS.md and docs/bench.svg left as they are")
		return
	}
	root := harness.RepoRoot()
	writeFile(t, filepath.Join(root, "BENCHMARKS.md"), report.Markdown())
	subtitle := fmt.Sprintf("%s · %d CPUs %s · Traefik %s · %s, %d connections, %s per variant",
		report.Date.UTC().Format("2006-01-02"), report.CPUs, report.CPUModel, report.Traefik, tool.Name, connections, duration)
	writeFile(t, filepath.Join(root, "docs", "bench.svg"), bench.SVG(report.Ratios, subtitle))
	fmt.Printf("bench: wrote %s and %s\n", filepath.Join(root, "BENCHMARKS.md"), filepath.Join(root, "docs", "bench.svg"))
}

// selectGroups returns the groups named in only, a comma-separated list such as "e-two,c";
// all of them when only is empty.
func selectGroups(t *testing.T, groups []group, only string) []group {
	if only == "" {
		return groups
	}
	var out []group
	for _, name := range strings.Split(only, ",") {
		found := false
		for _, g := range groups {
			if g.name == strings.TrimSpace(name) {
				out = append(out, g)
				found = true
			}
		}
		if !found {
			t.Fatalf("BENCH_ONLY: no variant group %q", name)
		}
	}
	return out
}

// processCPU returns the CPU time (user and system) Traefik has used so far, read from
// /proc; 0 without a Traefik or when it cannot be read.
func processCPU(tr *harness.Traefik) time.Duration {
	if tr == nil {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tr.PID()))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: utime and stime are the
	// 12th and 13th of them, in clock ticks (USER_HZ, 100 on Linux).
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// captureProfile fetches a CPU profile of Traefik (its api.debug pprof endpoint) covering the
// middle of a load run of the given duration, and writes it to file.
func captureProfile(apiURL, file string, duration time.Duration) chan error {
	done := make(chan error, 1)
	go func() {
		seconds := int(duration/time.Second) - 2
		if seconds < 1 {
			seconds = 1
		}
		time.Sleep(time.Second)
		resp, err := http.Get(apiURL + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		if err == nil {
			err = os.WriteFile(file, data, 0o644)
		}
		done <- err
	}()
	return done
}

// benchGroups lists the variants in the order they run.
func benchGroups(rs bench.RuleSet, stable, lane string) []group {
	miss := func(key, label string) probe {
		return probe{key: key, label: label, userID: rs.MissUser}
	}
	hit := func(key, label, seenLane string) probe {
		return probe{key: key, label: label, userID: rs.LaneUser, lane: true, seenLane: seenLane}
	}
	markCfg := map[string]any{"identity": map[string]any{"header": "X-User-Id"}, "rules": rs.Rules}
	lanes := map[string]any{}
	for _, l := range rs.Lanes {
		lanes[l] = map[string]any{"servers": []any{map[string]any{"url": lane}}}
	}
	dispatchCfg := map[string]any{"lanes": lanes}
	noopSrc := func(name string) string {
		return filepath.Join(harness.RepoRoot(), "e2e", "bench", "testdata", name)
	}
	noPlugins := map[string]string{}
	eOne := miss("e-one", "Traefik + 1 do-nothing Yaegi middleware")
	eOne.seenNoop = "a"
	eTwo := miss("e-two", "Traefik + 2 do-nothing Yaegi middlewares")
	eTwo.seenNoop = "ab"
	return []group{
		{name: "f", probes: []probe{miss("f", "backend hit directly")}},
		{name: "a", traefik: true, opts: traefikOpts(noPlugins, nil, dynamic(stable, lane, nil, nil, "")),
			probes: []probe{miss("a", "Traefik alone, router → service")}},
		{name: "b", traefik: true, opts: traefikOpts(noPlugins, nil, dynamic(stable, lane, nil, nil, rs.LaneUser)),
			probes: []probe{
				miss("b-miss", "Traefik Header() routers, no match → stable"),
				hit("b-lane", "Traefik Header() routers, match → canary service", ""),
			}},
		{name: "e-two", traefik: true,
			opts: traefikOpts(
				map[string]string{"bench-noop-a": "graylane.test/noopa", "bench-noop-b": "graylane.test/noopb"},
				map[string]string{"graylane.test/noopa": noopSrc("noopa"), "graylane.test/noopb": noopSrc("noopb")},
				dynamic(stable, lane, map[string]any{
					"noop-a": plugin("bench-noop-a", map[string]any{"value": "a"}),
					"noop-b": plugin("bench-noop-b", map[string]any{"header": "X-Bench-Noop-2", "value": "b"}),
				}, []string{"noop-a", "noop-b"}, "")),
			probes: []probe{eTwo}},
		{name: "c", traefik: true,
			opts: traefikOpts(nil, nil, dynamic(stable, lane, map[string]any{
				"gray-mark":     plugin("graylane-mark", markCfg),
				"gray-dispatch": plugin("graylane-dispatch", dispatchCfg),
			}, []string{"gray-mark", "gray-dispatch"}, "")),
			probes: []probe{
				miss("c-miss", "graylane-mark + graylane-dispatch, no rule matches"),
				hit("c-lane", "graylane-mark + graylane-dispatch, dispatched to a lane", rs.LaneName),
			}},
		{name: "e-one", traefik: true,
			opts: traefikOpts(
				map[string]string{"bench-noop-a": "graylane.test/noopa"},
				map[string]string{"graylane.test/noopa": noopSrc("noopa")},
				dynamic(stable, lane, map[string]any{
					"noop-a": plugin("bench-noop-a", map[string]any{"value": "a"}),
				}, []string{"noop-a"}, "")),
			probes: []probe{eOne}},
		{name: "d", traefik: true,
			opts: traefikOpts(map[string]string{"graylane": "github.com/graylane/graylane"}, nil,
				dynamic(stable, lane, map[string]any{
					"graylane": plugin("graylane", map[string]any{"mark": markCfg, "dispatch": dispatchCfg}),
				}, []string{"graylane"}, "")),
			probes: []probe{
				miss("d-miss", "graylane facade (mark + dispatch in one), no rule matches"),
				hit("d-lane", "graylane facade (mark + dispatch in one), dispatched", rs.LaneName),
			}},
	}
}

// traefikOpts returns the options of a variant's Traefik; plugins nil declares graylane-mark
// and graylane-dispatch, an empty map no plugin at all.
func traefikOpts(plugins, sources map[string]string, dyn string) harness.TraefikOptions {
	return harness.TraefikOptions{
		Dynamic:            dyn,
		LocalPlugins:       plugins,
		ExtraPluginSources: sources,
		LogLevel:           "ERROR",
		// No metrics: Traefik's per-request work is routing and proxying only.
		ExtraStatic: "metrics: null\n",
	}
}

func plugin(alias string, cfg map[string]any) map[string]any {
	return map[string]any{"plugin": map[string]any{alias: cfg}}
}

// dynamic returns the dynamic configuration of a variant: router "bench" (PathPrefix(`/`),
// with the middlewares of chain) → service stable; with headerUser set, also router "canary"
// (same rule && Header(`X-User-Id`, headerUser), higher priority) → service canary on the
// backend's lane port.
func dynamic(stable, lane string, middlewares map[string]any, chain []string, headerUser string) string {
	router := map[string]any{"entryPoints": []string{"web"}, "rule": "PathPrefix(`/`)", "service": "stable", "priority": 1}
	if len(chain) > 0 {
		router["middlewares"] = chain
	}
	routers := map[string]any{"bench": router}
	if headerUser != "" {
		routers["canary"] = map[string]any{
			"entryPoints": []string{"web"},
			"rule":        "PathPrefix(`/`) && Header(`X-User-Id`, `" + headerUser + "`)",
			"service":     "canary",
			"priority":    100,
		}
	}
	lb := func(url string) map[string]any {
		return map[string]any{"loadBalancer": map[string]any{"servers": []any{map[string]any{"url": url}}}}
	}
	httpCfg := map[string]any{
		"routers":  routers,
		"services": map[string]any{"stable": lb(stable), "canary": lb(lane)},
	}
	if middlewares != nil {
		httpCfg["middlewares"] = middlewares
	}
	out, err := yaml.Marshal(map[string]any{"http": httpCfg})
	if err != nil {
		panic(err)
	}
	return string(out)
}

// checkRouting sends the probe's request once and fails the test unless the backend port,
// lane header and do-nothing plugin headers are the expected ones. It retries for a few
// seconds while Traefik applies its configuration.
func checkRouting(t *testing.T, url string, headers map[string]string, p probe, stable, lane string) {
	t.Helper()
	wantPort := portOf(stable)
	if p.lane {
		wantPort = portOf(lane)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := harness.TryDo(http.MethodGet, url, headers, nil)
		var got string
		if err == nil {
			got = fmt.Sprintf("status %d, port %s, lane %q, no-op %q", r.Status, r.Header.Get(bench.HeaderPort),
				r.Header.Get(bench.HeaderSeenLane), r.Header.Get(bench.HeaderSeenNoop))
			if r.Status == http.StatusOK && r.Header.Get(bench.HeaderPort) == wantPort &&
				r.Header.Get(bench.HeaderSeenLane) == p.seenLane && r.Header.Get(bench.HeaderSeenNoop) == p.seenNoop {
				return
			}
		} else {
			got = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: routing check: got %s; want status 200, port %s, lane %q, no-op %q",
				p.key, got, wantPort, p.seenLane, p.seenNoop)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func portOf(url string) string {
	return url[strings.LastIndexByte(url, ':')+1:]
}

// startBackend starts this test binary again as the static backend (a separate process) and
// returns its stable and lane URLs.
func startBackend(t *testing.T) (stable, lane string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), bench.BackendEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // closing it stops the backend
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		fields := strings.Fields(strings.TrimPrefix(l, "listening on "))
		if len(fields) != 2 {
			t.Fatalf("backend: unexpected first line %q", l)
		}
		return fields[0], fields[1]
	case <-time.After(30 * time.Second):
		t.Fatal("backend did not start within 30s")
	}
	return "", ""
}

// median returns the round whose requests/s is the median.
func median(rs []bench.Result) bench.Result {
	sorted := append([]bench.Result(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].RPS < sorted[j].RPS })
	return sorted[len(sorted)/2]
}

func loadShape(tool bench.Tool, d time.Duration) string {
	args := tool.Command(bench.Load{URL: "URL", Duration: d, Connections: connections, Threads: threads})
	args[0] = tool.Name
	return strings.Join(args, " ")
}

func traefikVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			return "v" + strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// sourceRevision names the commit measured and whether the plugin source differed from it.
// BENCH_SOURCE, when set, says it instead (for a run in an exported snapshot).
func sourceRevision() string {
	if s := os.Getenv("BENCH_SOURCE"); s != "" {
		return s
	}
	root := harness.RepoRoot()
	rev, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	out := "commit " + strings.TrimSpace(string(rev))
	dirty, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--", "mark", "dispatch", "graylane.go").Output()
	if len(strings.TrimSpace(string(dirty))) > 0 {
		out += ", with uncommitted changes in the plugin source"
	}
	return out
}

// loadAverage returns the 1, 5 and 15 minute load averages of /proc/loadavg, or "".
func loadAverage() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], ", ")
}

func cpuModel() string {
	for _, line := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		t.Fatalf("%s=%q: want a duration of at least 1s", name, s)
	}
	return d
}

func envOr(name, def string) string {
	if s := os.Getenv(name); s != "" {
		return s
	}
	return def
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

func readFileOr(path, def string) string {
	if path == "" {
		return def
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	return string(data)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
