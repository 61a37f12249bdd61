package reliability_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

const (
	consistencyPercent = 25.0
	consistencySalt    = "replicas"
)

// consistencyDynamic puts listed users in lane vip, app versions >=3.0.0 in lane newapp, and a
// sticky 25 % of the rest in lane canary (keyed by the user ID, or for anonymous visitors by
// the random ID mark issues in the graylane_id cookie); every lane has its own backend.
func consistencyDynamic(users []string, stable, vip, newapp, canary string) string {
	return fmt.Sprintf(`
http:
  routers:
    replicas:
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
          anonymous: cookie
          stickyCookie: { name: graylane_id }
          rules:
            - { name: vip, lane: vip, users: [%s] }
            - { name: new-app, lane: newapp, versions: ">=3.0.0" }
            - { name: share, lane: canary, percent: %v, salt: %s }
    gray-dispatch:
      plugin:
        graylane-dispatch:
          servedByHeader: X-Gray-Upstream
          lanes:
            vip:    { servers: [{ url: %q }] }
            newapp: { servers: [{ url: %q }] }
            canary: { servers: [{ url: %q }] }
`, stable, strings.Join(users, ", "), consistencyPercent, consistencySalt, vip, newapp, canary)
}

// bucket is the spec's sticky bucket: the first 8 bytes of SHA-256(salt ":" key), big-endian,
// modulo 10000.
func bucket(salt, key string) uint64 {
	sum := sha256.Sum256([]byte(salt + ":" + key))
	return binary.BigEndian.Uint64(sum[:8]) % 10000
}

// consistencyUser returns the i-th user's ID and app version.
func consistencyUser(i int) (id, version string) {
	id = "user-" + strconv.Itoa(i)
	if i%7 == 0 {
		return id, fmt.Sprintf("3.%d.0", i%3)
	}
	return id, fmt.Sprintf("2.9.%d", i%5)
}

// TestReplicaConsistency starts two Traefik processes with the same configuration and sends
// each of 10,000 users to both (8 at a time). Both must put every user in the same lane, and
// that lane must be the one the spec's rules and bucket formula give. Then 1,000 anonymous
// visitors get their sticky cookie from one replica and must stay in the same lane on both.
func TestReplicaConsistency(t *testing.T) {
	total := 10_000
	if long() {
		total = 100_000
	}
	var vipUsers []string
	vip := map[string]bool{}
	for i := 3; i < total; i += 50 {
		id, _ := consistencyUser(i)
		vipUsers = append(vipUsers, strconv.Quote(id))
		vip[id] = true
	}
	stable, vipB, newappB, canaryB := harness.StartBackend(t, "stable"), harness.StartBackend(t, "vip"),
		harness.StartBackend(t, "newapp"), harness.StartBackend(t, "canary")
	dyn := consistencyDynamic(vipUsers, stable.URL, vipB.URL, newappB.URL, canaryB.URL)
	replicas := []*harness.Traefik{
		startTraefik(t, harness.TraefikOptions{Dynamic: dyn}),
		startTraefik(t, harness.TraefikOptions{Dynamic: dyn}),
	}
	for _, tr := range replicas {
		tr.WaitRouter(t, "replicas", 60*time.Second)
	}

	expected := func(id, version string) string {
		switch {
		case vip[id]:
			return "vip"
		case strings.HasPrefix(version, "3."):
			return "newapp"
		case bucket(consistencySalt, id) < uint64(consistencyPercent*100):
			return "canary"
		}
		return "stable"
	}

	const workers = 8
	c := newClient(workers)
	agree, disagree, offSpec := newTally(), newTally(), newTally()
	start := time.Now()
	n := runLoad(t.Context(), workers, total, 10*time.Minute, 0, func(i int) {
		id, version := consistencyUser(i)
		var lanes [2]string
		for r, tr := range replicas {
			reply, _, err := send(c, request{url: tr.URL + "/", header: http.Header{"X-User-Id": {id}, "X-App-Version": {version}}})
			if err != nil {
				disagree.fail("%s on replica %d: %v", id, r, err)
				return
			}
			if reply.Status != http.StatusOK {
				disagree.fail("%s on replica %d: status %d: %.200s", id, r, reply.Status, reply.Body)
				return
			}
			lanes[r] = reply.Backend()
			// Each lane has its own backend, and the backend saw the lane header.
			if lane := reply.RequestHeader(laneHeader); lane != lanes[r] && (lane != "" || lanes[r] != "stable") {
				disagree.fail("%s on replica %d: lane header %q answered by %q", id, r, lane, lanes[r])
				return
			}
		}
		if lanes[0] != lanes[1] {
			disagree.fail("%s (version %s): replica 0 chose %q, replica 1 %q", id, version, lanes[0], lanes[1])
			return
		}
		agree.ok(lanes[0], 0)
		if want := expected(id, version); lanes[0] != want {
			offSpec.fail("%s (version %s): lane %q, the spec's rules and bucket formula give %q", id, version, lanes[0], want)
		}
	})
	took := time.Since(start)

	t.Logf("%d users sent to 2 replicas in %s: %d agreed, %d disagreed or failed; lanes: %s",
		n, took.Round(time.Millisecond), agree.total, disagree.failures, agree)
	t.Logf("lane differing from the spec's formula: %d", offSpec.failures)
	if n != total {
		t.Errorf("sent %d users, want %d", n, total)
	}
	disagree.requireNoFailures(t, "replica agreement")
	offSpec.requireNoFailures(t, "lanes by the spec's formula")
	// The percentage rule sees the users no earlier rule took; its share must be close to 25 %.
	rest := total - agree.count("vip") - agree.count("newapp")
	if share := float64(agree.count("canary")) / float64(rest) * 100; rest > 0 && (share < consistencyPercent-2 || share > consistencyPercent+2) {
		t.Errorf("percent rule took %.2f %% of %d users, want %.0f %% ± 2", share, rest, consistencyPercent)
	}

	// Anonymous visitors: the first answer (from either replica) issues the sticky cookie;
	// with it, both replicas must keep the visitor in the lane of that first answer, which
	// is the lane the formula gives for the cookie's ID.
	visitors := total / 10
	sticky := newTally()
	start = time.Now()
	runLoad(t.Context(), workers, visitors, 5*time.Minute, 0, func(i int) {
		h := http.Header{"X-App-Version": {"2.9.0"}}
		first, _, err := send(c, request{url: replicas[i%2].URL + "/", header: h})
		if err != nil || first.Status != http.StatusOK {
			sticky.fail("visitor %d, first request: %s", i, outcome(first, err))
			return
		}
		var id string
		for _, ck := range (&http.Response{Header: first.Header}).Cookies() {
			if ck.Name == "graylane_id" {
				id = ck.Value
			}
		}
		if id == "" {
			sticky.fail("visitor %d: no graylane_id cookie in %v", i, first.Header["Set-Cookie"])
			return
		}
		want := "stable"
		if bucket(consistencySalt, id) < uint64(consistencyPercent*100) {
			want = "canary"
		}
		if first.Backend() != want {
			sticky.fail("visitor %s: first answer from %q, the formula gives %q", id, first.Backend(), want)
			return
		}
		h.Set("Cookie", "graylane_id="+id)
		for r, tr := range replicas {
			reply, _, err := send(c, request{url: tr.URL + "/", header: h})
			if err != nil || reply.Status != http.StatusOK {
				sticky.fail("visitor %s on replica %d: %s", id, r, outcome(reply, err))
				return
			}
			if reply.Backend() != want {
				sticky.fail("visitor %s on replica %d: lane %q, first answer %q", id, r, reply.Backend(), want)
				return
			}
		}
		sticky.ok(want, 0)
	})
	t.Logf("%d anonymous visitors, each sent with its sticky cookie to both replicas, in %s: %s",
		visitors, time.Since(start).Round(time.Millisecond), sticky)
	sticky.requireNoFailures(t, "anonymous visitors")
	if sticky.total != visitors {
		t.Errorf("%d visitors done, want %d", sticky.total, visitors)
	}

	for _, tr := range replicas {
		requireNoPanic(t, tr)
	}
}
