package reliability_test

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// Timeouts of the fault scenarios (see faultsDynamic).
const (
	hangTimeout = 500 * time.Millisecond // dispatch timeouts.responseHeader of the hang router
	slowDelay   = 300 * time.Millisecond // how long the slow server takes
	// latencySlack is what a request may take beyond the timeout it waits out: Traefik,
	// two plugins and the retry on a loaded 2-core machine.
	latencySlack = 1500 * time.Millisecond
	uploadSize   = 64 << 10 // bytes of the body of each POST in the killed and hung scenarios
)

// faultServers are the servers of TestFaults.
type faultServers struct {
	stable, kill1, kill2, hang2, slow1, down1, down2, alt, none1 *harness.Backend
	hang1                                                        *hangListener
}

// faultsDynamic gives every fault scenario its own router (chosen by Host) and its own
// dispatch middleware, so that their timeouts and passive health do not mix. The client sends
// the lane header itself: dispatch alone, as on an inner gateway behind a marking edge.
func faultsDynamic(s faultServers) string {
	return fmt.Sprintf(`
http:
  routers:
    kill: { rule: "Host(`+"`kill.test`"+`)", entryPoints: [web], middlewares: [d-kill], service: stable }
    hang: { rule: "Host(`+"`hang.test`"+`)", entryPoints: [web], middlewares: [d-hang], service: stable }
    slow: { rule: "Host(`+"`slow.test`"+`)", entryPoints: [web], middlewares: [d-slow], service: stable }
    down: { rule: "Host(`+"`down.test`"+`)", entryPoints: [web], middlewares: [d-down], service: stable }
  services:
    stable:
      loadBalancer:
        servers: [{ url: %q }]
  middlewares:
    d-kill:
      plugin:
        graylane-dispatch:
          servedByHeader: X-Gray-Upstream
          timeouts: { dial: 1s, responseHeader: 5s }
          health: { maxFails: 2, window: 10s, cooldown: 60s }
          lanes:
            canary: { servers: [{ url: %q }, { url: %q }] }
    d-hang:
      plugin:
        graylane-dispatch:
          servedByHeader: X-Gray-Upstream
          timeouts: { dial: 1s, responseHeader: %s }
          health: { maxFails: 2, window: 10s, cooldown: 60s }
          lanes:
            canary: { servers: [{ url: %q }, { url: %q }] }
    d-slow:
      plugin:
        graylane-dispatch:
          servedByHeader: X-Gray-Upstream
          timeouts: { dial: 1s, responseHeader: 5s }
          lanes:
            canary: { servers: [{ url: %q }] }
    d-down:
      plugin:
        graylane-dispatch:
          servedByHeader: X-Gray-Upstream
          timeouts: { dial: 1s, responseHeader: 5s }
          health: { maxFails: 2, window: 10s, cooldown: 60s }
          lanes:
            canary: { servers: [{ url: %q }, { url: %q }], fallback: next }
            other:  { servers: [{ url: %q }], fallback: alt }
            alt:    { servers: [{ url: %q }] }
            closed: { servers: [{ url: %q }], fallback: none }
`, s.stable.URL, s.kill1.URL, s.kill2.URL, hangTimeout, s.hang1.URL(), s.hang2.URL, s.slow1.URL,
		s.down1.URL, s.down2.URL, s.down1.URL, s.alt.URL, s.none1.URL)
}

// TestFaults breaks lane servers under a bounded GET load and checks what the spec promises:
// retry before the first byte to another server, passive health, the response-header
// timeout, and the lane's fallback when all its servers are down.
func TestFaults(t *testing.T) {
	phase := 2 * time.Second
	if long() {
		phase = 10 * time.Second
	}
	s := faultServers{
		stable: harness.StartBackend(t, "stable"),
		kill1:  harness.StartBackend(t, "kill1"),
		kill2:  harness.StartBackend(t, "kill2"),
		hang1:  startHangListener(t, "127.0.0.1:0"),
		hang2:  harness.StartBackend(t, "hang2"),
		slow1:  harness.StartBackend(t, "slow1"),
		down1:  harness.StartBackend(t, "down1"),
		down2:  harness.StartBackend(t, "down2"),
		alt:    harness.StartBackend(t, "alt"),
		none1:  harness.StartBackend(t, "none1"),
	}
	tr := startTraefik(t, harness.TraefikOptions{Dynamic: faultsDynamic(s)})
	for _, r := range []string{"kill", "hang", "slow", "down"} {
		tr.WaitRouter(t, r, 60*time.Second)
	}
	const workers = 4
	c := newClient(workers)
	// get sends a GET in the canary lane (or lane) to the host's router and tallies the answer:
	// a 200 from one of the wanted backends succeeds.
	get := func(res *tally, host, path, lane string, want ...string) {
		reply, took, err := send(c, request{url: tr.URL + path, host: host, header: http.Header{laneHeader: {lane}}})
		if err != nil {
			res.fail("%s %s: %v (after %s)", host, path, err, took)
			return
		}
		if reply.Status != http.StatusOK {
			res.fail("%s %s: status %d after %s: %.200s", host, path, reply.Status, took, reply.Body)
			return
		}
		for _, w := range want {
			if reply.Backend() == w {
				res.ok(w, took)
				return
			}
		}
		res.fail("%s %s: answered by %q, want one of %v", host, path, reply.Backend(), want)
	}

	// post sends a POST with a body of uploadSize bytes in lane to the host's router and tallies
	// the answer: a 200 from the wanted backend that received the whole body succeeds.
	post := func(res *tally, host, lane, want string) {
		reply, took, err := send(c, request{method: http.MethodPost, url: tr.URL + "/upload", host: host, header: http.Header{laneHeader: {lane}}, body: strings.Repeat("b", uploadSize)})
		switch {
		case err != nil:
			res.fail("POST %s: %v (after %s)", host, err, took)
		case reply.Status != http.StatusOK || reply.Backend() != want:
			res.fail("POST %s: status %d from %q after %s: %.200s", host, reply.Status, reply.Backend(), took, reply.Body)
		case reply.JSON["bytes"] != float64(uploadSize):
			res.fail("POST %s: %v bytes arrived, want %d", host, reply.JSON["bytes"], uploadSize)
		default:
			res.ok("POST "+want, took)
		}
	}

	t.Run("killed", func(t *testing.T) {
		before, after := newTally(), newTally()
		stop := backgroundLoad(workers, 100_000, time.Minute, 2*time.Millisecond, func(int) {
			get(before, "kill.test", "/", "canary", "kill1", "kill2")
		})
		time.Sleep(phase)
		s.kill1.Kill() // SIGKILL while requests are in flight
		killed := stop()
		// After the kill, every other request is a POST with a body: connecting to kill1 is
		// refused, nothing read the body, so it goes to kill2 as well.
		stop = backgroundLoad(workers, 100_000, time.Minute, 2*time.Millisecond, func(i int) {
			if i%2 == 0 {
				get(after, "kill.test", "/", "canary", "kill2")
			} else {
				post(after, "kill.test", "canary", "kill2")
			}
		})
		time.Sleep(phase)
		stop()
		// Passive health: kill1 is now marked down for the 60s cooldown. Listen on its port
		// again (accepting, never answering) and check that dispatch does not try it.
		probe := startHangListener(t, strings.TrimPrefix(s.kill1.URL, "http://"))
		down := newTally()
		runLoad(t.Context(), workers, 100_000, phase/2, 2*time.Millisecond, func(int) {
			get(down, "kill.test", "/", "canary", "kill2")
		})
		t.Logf("before and during SIGKILL of kill1 (%d requests): %s", killed, before)
		t.Logf("after the kill: %s", after)
		t.Logf("with kill1's port listening again during its cooldown: %s; connections to kill1's port: %d", down, probe.accepted())
		before.requireNoFailures(t, "GETs around the kill")
		after.requireNoFailures(t, "GETs and POSTs after the kill")
		down.requireNoFailures(t, "GETs during the cooldown")
		if probe.accepted() != 0 {
			t.Errorf("dispatch connected %d times to kill1 during its cooldown: passive health did not mark it down", probe.accepted())
		}
		if before.count("kill1") == 0 || before.count("kill2") == 0 {
			t.Errorf("both servers should have answered before the kill: %s", before)
		}
		if after.total < 50 || after.count("POST kill2") == 0 {
			t.Errorf("too few requests after the kill: %s", after)
		}
	})

	t.Run("hung", func(t *testing.T) {
		gets, posts := newTally(), newTally()
		var waited atomic.Int64
		var mu sync.Mutex
		answers := map[string]string{} // POSTs by X-Request-Id: "504", "200 hang2" or what came instead
		// hungPost sends POST i with a body of uploadSize bytes and an X-Request-Id, and records
		// the answer; the checks after the load tell which answer was right.
		hungPost := func(i int) {
			id := fmt.Sprintf("hung-post-%d", i)
			reply, took, err := send(c, request{method: http.MethodPost, url: tr.URL + "/upload", host: "hang.test",
				header: http.Header{laneHeader: {"canary"}, "X-Request-Id": {id}}, body: strings.Repeat("h", uploadSize)})
			var answer string
			switch {
			case err != nil:
				answer = fmt.Sprintf("%v after %s", err, took)
				posts.fail("POST %s: %s", id, answer)
			case reply.Status == http.StatusGatewayTimeout:
				answer = "504"
			case reply.Status == http.StatusOK && reply.Backend() == "hang2" && reply.JSON["bytes"] == float64(uploadSize):
				answer = "200 hang2"
			default:
				answer = fmt.Sprintf("status %d from %q after %s: %.100s", reply.Status, reply.Backend(), took, reply.Body)
			}
			if err == nil {
				posts.ok(strconv.Itoa(reply.Status), took)
			}
			mu.Lock()
			answers[id] = answer
			mu.Unlock()
		}
		// First GETs one at a time, until one went to the hung server (the balancer alternates
		// between the two): it waits out the timeout and is answered by hang2, retried before
		// the first byte. That is the hung server's first failure of maxFails.
		first := newTally()
		for i := 0; i < 4 && first.maxTook < hangTimeout; i++ {
			get(first, "hang.test", "/", "canary", "hang2")
		}
		t.Logf("GETs one at a time: %s", first)
		first.requireNoFailures(t, "GETs one at a time with a hung server")
		if first.maxTook < hangTimeout {
			t.Errorf("none of %d GETs one at a time went to the hung server and waited out the timeout: %s", first.total, first)
		}
		// Then the load. Its first 2×workers requests are POSTs, so that POSTs are among those
		// that go to the hung server before it is marked down; then every eighth.
		runLoad(t.Context(), workers, 100_000, phase+phase/2, 2*time.Millisecond, func(i int) {
			start := time.Now()
			if i < 2*workers || i%8 == 0 {
				hungPost(i)
			} else {
				get(gets, "hang.test", "/", "canary", "hang2")
			}
			if time.Since(start) >= hangTimeout {
				waited.Add(1)
			}
		})
		slow := int(waited.Load())
		t.Logf("one server accepts and never answers (responseHeader %s): GETs %s; POSTs %s; %d requests waited out the timeout; the hung server accepted %d connections",
			hangTimeout, gets, posts, slow, s.hang1.accepted())
		gets.requireNoFailures(t, "GETs with a hung server")
		posts.requireNoFailures(t, "POSTs with a hung server")
		if took := max(gets.maxTook, posts.maxTook); took > hangTimeout+latencySlack {
			t.Errorf("slowest request took %s, want under %s (responseHeader timeout %s + %s)", took, hangTimeout+latencySlack, hangTimeout, latencySlack)
		}
		if s.hang1.accepted() == 0 {
			t.Errorf("dispatch never tried the hung server")
		}
		// Passive health: after maxFails timeouts the hung server is skipped; only requests
		// in flight when it was marked down (at most maxFails plus the workers) wait it out.
		if limit := 2 + workers; slow > limit {
			t.Errorf("%d requests waited out the timeout, want at most %d once the hung server is marked down", slow, limit)
		}
		// A POST the hung server received is answered 504 and never sent to hang2: its body was
		// sent, and the server may have carried it out. Any other POST reached hang2 once.
		seen := seenIDs(t, s.hang2)
		var hung int
		var wrong []string
		for id, answer := range answers {
			want, wantSeen := "200 hang2", 1
			if s.hang1.received(id) {
				hung++
				want, wantSeen = "504", 0
			}
			if answer != want || seen[id] != wantSeen {
				wrong = append(wrong, fmt.Sprintf("%s: %s, reached hang2 %d times; want %s, reached hang2 %d times", id, answer, seen[id], want, wantSeen))
			}
		}
		sort.Strings(wrong)
		if len(wrong) > 0 {
			t.Errorf("%d of %d POSTs (%d of them received by the hung server) were answered wrong; first ones:\n  %s",
				len(wrong), len(answers), hung, strings.Join(wrong[:min(len(wrong), 10)], "\n  "))
		}
		if hung == 0 {
			t.Errorf("the hung server received none of the %d POSTs", len(answers))
		}
	})

	t.Run("slow", func(t *testing.T) {
		res := newTally()
		path := fmt.Sprintf("/slow?d=%s", slowDelay)
		n := runLoad(t.Context(), workers, 100_000, phase, 0, func(int) {
			get(res, "slow.test", path, "canary", "slow1")
		})
		t.Logf("the only lane server takes %s per answer: %s", slowDelay, res)
		res.requireNoFailures(t, "GETs to a slow server")
		if n < workers {
			t.Errorf("only %d requests completed", n)
		}
		if res.maxTook < slowDelay || res.maxTook > 5*time.Second {
			t.Errorf("slowest request took %s, want between %s and the 5s timeout", res.maxTook, slowDelay)
		}
	})

	t.Run("all-down", func(t *testing.T) {
		s.down1.Kill()
		s.down2.Kill()
		s.none1.Kill()
		next, alt, none := newTally(), newTally(), newTally()
		limit := 300
		if long() {
			limit = 3000
		}
		runLoad(t.Context(), workers, limit, time.Minute, 0, func(i int) {
			switch i % 3 {
			case 0:
				get(next, "down.test", "/", "canary", "stable")
			case 1:
				get(alt, "down.test", "/", "other", "alt")
			default:
				reply, took, err := send(c, request{url: tr.URL + "/", host: "down.test", header: http.Header{laneHeader: {"closed"}}})
				switch {
				case err != nil:
					none.fail("closed: %v", err)
				case reply.Status != http.StatusBadGateway:
					none.fail("closed: status %d, want 502 (fallback none): %.200s", reply.Status, reply.Body)
				default:
					none.ok("502", took)
				}
			}
		})
		t.Logf("lane with both servers killed, fallback next: %s", next)
		t.Logf("lane with its server killed, fallback lane alt: %s", alt)
		t.Logf("lane with its server killed, fallback none: %s", none)
		next.requireNoFailures(t, "fallback next")
		alt.requireNoFailures(t, "fallback to another lane")
		none.requireNoFailures(t, "fallback none")
	})

	requireNoPanic(t, tr)
}
