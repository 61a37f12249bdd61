package reliability_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// Thresholds of the reload soak: after the last reload, Traefik's goroutine count may exceed
// the count at the checkpoint by at most maxGoroutineGrowth or goroutineNoise goroutines,
// whichever is more (Traefik idles at about 30), and its in-use heap by at most maxHeapGrowth.
// Both are read in a settled state (see settledStats). A leak of one goroutine per reload, or
// of the middleware instances of every reload, breaks them.
const (
	maxGoroutineGrowth = 0.20
	goroutineNoise     = 10
	maxHeapGrowth      = 0.50
)

// soakBackends are the servers of the reload soak: the router's own service and the lanes.
type soakBackends struct {
	stable, c1, c2, b1 *harness.Backend
}

// soakDynamic returns the i-th configuration of the soak. Even and odd configurations use
// different rule sets, the canary lane gains and loses a server and changes weights, and every
// configuration differs from the one before (the percent values move and a never-matching
// rule carries i), so Traefik applies each one.
func soakDynamic(i int, b soakBackends) string {
	var rules string
	if i%2 == 0 {
		rules = fmt.Sprintf(`
            - { name: testers, lane: canary, users: [u0, u1, u2, u3, u4, u5, u6, u7, u8, u9] }
            - { name: share, lane: blue, percent: %s, salt: soak }`, percent(i))
	} else {
		rules = fmt.Sprintf(`
            - { name: beta, lane: blue, path: { prefix: /beta } }
            - { name: app, lane: blue, versions: ">=2.0.0" }
            - { name: share, lane: canary, percent: %s, salt: soak-odd }`, percent(i))
	}
	return fmt.Sprintf(`
http:
  routers:
    soak:
      rule: PathPrefix(`+"`/`"+`)
      entryPoints: [web]
      middlewares: [gray-mark, gray-dispatch]
      service: stable
  services:
    stable:
      loadBalancer:
        servers: [{ url: %q }]
  middlewares:
    gray-mark:
      plugin:
        graylane-mark:
          identity: { header: X-User-Id }
          version: { header: X-App-Version }
          anonymous: none
          rules:
            - { name: reload-%d, lane: canary, headers: { X-Reload: "%d" } }%s
    gray-dispatch:
      plugin:
        graylane-dispatch:
          timeouts: { dial: 2s, responseHeader: 10s, idle: 1s }
          lanes:
            canary:
              servers: [%s]
            blue:
              servers: [{ url: %q }]
`, b.stable.URL, i, i, rules, canaryServers(i, b), b.b1.URL)
}

// canaryServers returns the i-th server list of the canary lane: every third configuration
// drops c2, the others weigh c1 from 1 to 3.
func canaryServers(i int, b soakBackends) string {
	if i%3 == 0 {
		return fmt.Sprintf("{ url: %q }", b.c1.URL)
	}
	return fmt.Sprintf("{ url: %q, weight: %d }, { url: %q }", b.c1.URL, 1+i%3, b.c2.URL)
}

// percent returns the i-th percent value of the soak: it sweeps 0..100 with two decimals.
func percent(i int) string {
	return strconv.FormatFloat(float64((i*1237)%10001)/100, 'f', -1, 64)
}

// soakCheck is the invariant every soak answer must hold, whatever configuration served it:
// 200, and the backend that answered belongs to the lane the backend was told.
func soakCheck(reply *harness.Reply) error {
	if reply.Status != http.StatusOK {
		return fmt.Errorf("status %d: %.200s", reply.Status, reply.Body)
	}
	lane, backend := reply.RequestHeader(laneHeader), reply.Backend()
	want := map[string][]string{"": {"stable"}, "canary": {"c1", "c2"}, "blue": {"b1"}}[lane]
	for _, w := range want {
		if backend == w {
			return nil
		}
	}
	return fmt.Errorf("lane %q answered by %q", lane, backend)
}

// runtimeStats are Traefik's goroutine count and in-use heap after a forced GC.
type runtimeStats struct {
	goroutines float64
	heap       float64
}

// settledStats reads Traefik's runtime statistics in a settled state: the load stopped, the
// client's idle connections closed, Traefik's and dispatch's idle upstream connections
// expired (1s idle timeouts), and a garbage collection forced through pprof (api.debug).
func settledStats(tb testing.TB, tr *harness.Traefik, c *http.Client) runtimeStats {
	tb.Helper()
	c.CloseIdleConnections()
	time.Sleep(2500 * time.Millisecond)
	for i := 0; i < 2; i++ {
		resp, err := apiClient.Get(tr.APIURL + "/debug/pprof/heap?gc=1")
		if err != nil {
			tb.Fatalf("pprof: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			tb.Fatalf("pprof: %s (is api.debug on?)", resp.Status)
		}
	}
	m := metrics(tb, tr)
	return runtimeStats{goroutines: m["go_goroutines"], heap: m["go_memstats_heap_inuse_bytes"]}
}

// TestReloadSoak rewrites the dynamic configuration many times (alternating rule sets,
// moving percentages and weights) while a bounded load runs. No request may fail: every
// answer is a 200 from a backend of the lane the request was put in. Traefik's goroutines
// and heap, read at a checkpoint and after the last reload, must stay flat.
// Short: 200 reloads, checkpoint after 50. Long (GRAYLANE_LONG=1): 1,000, checkpoint after 100.
func TestReloadSoak(t *testing.T) {
	total, checkpoint := 200, 50
	if long() {
		total, checkpoint = 1000, 100
	}
	b := soakBackends{
		stable: harness.StartBackend(t, "stable"),
		c1:     harness.StartBackend(t, "c1"),
		c2:     harness.StartBackend(t, "c2"),
		b1:     harness.StartBackend(t, "b1"),
	}
	tr := startTraefik(t, harness.TraefikOptions{
		Dynamic: soakDynamic(0, b),
		ExtraStatic: `
api: { debug: true }
providers: { providersThrottleDuration: 50ms }
serversTransport: { forwardingTimeouts: { idleConnTimeout: 1s } }
`,
	})
	tr.WaitRouter(t, "soak", 60*time.Second)
	const workers = 4
	c := newClient(workers)
	waitAnswer(t, c, request{url: tr.URL + "/", header: http.Header{"X-User-Id": {"u1"}}}, 30*time.Second,
		func(r *harness.Reply) bool {
			return r.Status == http.StatusOK && r.RequestHeader(laneHeader) == "canary"
		})
	applied := reloads(t, tr)

	results := newTally()
	load := func(i int) {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		path := "/"
		if rng.IntN(4) == 0 {
			path = "/beta/page"
		}
		h := http.Header{"X-User-Id": {"u" + strconv.Itoa(rng.IntN(1000))}}
		if rng.IntN(3) == 0 {
			h.Set("X-App-Version", fmt.Sprintf("%d.%d.0", 1+rng.IntN(2), rng.IntN(10)))
		}
		reply, took, err := send(c, request{url: tr.URL + path, header: h})
		if err != nil {
			results.fail("request %d: %v", i, err)
			return
		}
		if err := soakCheck(reply); err != nil {
			results.fail("request %d: %v", i, err)
			return
		}
		results.ok(reply.Backend(), took)
	}

	// reloadTo rewrites the configuration until n configurations have been written, each
	// one applied by Traefik before the next is written, with the load running.
	written := 0
	reloadTo := func(n int) {
		stop := backgroundLoad(workers, 1_000_000, 10*time.Minute, 5*time.Millisecond, load)
		defer stop()
		for written < n {
			written++
			tr.WriteDynamic(t, soakDynamic(written, b))
			waitReloads(t, tr, applied+written, 30*time.Second)
		}
	}

	start := time.Now()
	reloadTo(checkpoint)
	atCheckpoint := settledStats(t, tr, c)
	reloadTo(total)
	atEnd := settledStats(t, tr, c)
	took := time.Since(start)

	t.Logf("%d reloads in %s under load: %s", total, took.Round(time.Second), results)
	t.Logf("after %d reloads: %.0f goroutines, heap in use %.1f MiB", checkpoint, atCheckpoint.goroutines, atCheckpoint.heap/(1<<20))
	t.Logf("after %d reloads: %.0f goroutines, heap in use %.1f MiB (growth: goroutines %+.1f%%, heap %+.1f%%)",
		total, atEnd.goroutines, atEnd.heap/(1<<20),
		100*(atEnd.goroutines/atCheckpoint.goroutines-1), 100*(atEnd.heap/atCheckpoint.heap-1))

	results.requireNoFailures(t, "requests during reloads")
	if results.total < total {
		t.Errorf("only %d requests ran during %d reloads", results.total, total)
	}
	if atEnd.goroutines > max(atCheckpoint.goroutines*(1+maxGoroutineGrowth), atCheckpoint.goroutines+goroutineNoise) {
		t.Errorf("goroutines grew from %.0f to %.0f between reload %d and %d (limit +%.0f%% or +%d)",
			atCheckpoint.goroutines, atEnd.goroutines, checkpoint, total, 100*maxGoroutineGrowth, goroutineNoise)
	}
	if atEnd.heap > atCheckpoint.heap*(1+maxHeapGrowth) {
		t.Errorf("heap in use grew from %.1f to %.1f MiB between reload %d and %d (limit +%.0f%%)",
			atCheckpoint.heap/(1<<20), atEnd.heap/(1<<20), checkpoint, total, 100*maxHeapGrowth)
	}

	// The last configuration is in force: the router is enabled and answers by its rules.
	if r, ok := tr.GetRouter(t, "soak"); !ok || r.Status != "enabled" {
		t.Errorf("router soak after the reloads: %+v", r)
	}
	last := request{url: tr.URL + "/beta/x", header: http.Header{"X-User-Id": {"u1"}}}
	wantLane := "blue" // odd configurations: /beta → blue
	if total%2 == 0 {
		wantLane = "canary" // even configurations: u1 is a tester
	}
	waitAnswer(t, c, last, 10*time.Second, func(r *harness.Reply) bool { return r.RequestHeader(laneHeader) == wantLane })
	requireNoPanic(t, tr)
}
