package reliability_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// hostileDynamic routes every request through mark (incoming strip, identity from header,
// cookie and JWT claim, version from a header) and dispatch. Two more routers, chosen by the
// X-Route header, use incoming: trustedIPs with a network the loopback peer is not in
// (X-Route: trusted), and incoming: keep as on an inner gateway (X-Route: inner).
func hostileDynamic(stable, canary, blue string) string {
	return fmt.Sprintf(`
http:
  routers:
    hostile:
      rule: PathPrefix(`+"`/`"+`)
      entryPoints: [web]
      middlewares: [gray-mark, gray-dispatch]
      service: stable
    trusted:
      rule: Header(`+"`X-Route`, `trusted`"+`)
      priority: 1000
      entryPoints: [web]
      middlewares: [gray-mark-trusted, gray-dispatch]
      service: stable
    inner:
      rule: Header(`+"`X-Route`, `inner`"+`)
      priority: 1000
      entryPoints: [web]
      middlewares: [gray-mark-keep, gray-dispatch]
      service: stable
  services:
    stable:
      loadBalancer:
        servers: [{ url: %[1]q }]
  middlewares:
    gray-mark:
      plugin:
        graylane-mark:
          incoming: strip
          identity: { header: X-User-Id, cookie: uid, jwtClaim: sub }
          version: { header: X-App-Version }
          anonymous: none
          rules: %[4]s
    gray-mark-trusted:
      plugin:
        graylane-mark:
          incoming: trustedIPs
          trustedIPs: [10.0.0.0/8]
          identity: { header: X-User-Id, cookie: uid, jwtClaim: sub }
          version: { header: X-App-Version }
          anonymous: none
          rules: %[4]s
    gray-mark-keep:
      plugin:
        graylane-mark:
          incoming: keep
          identity: { header: X-User-Id, cookie: uid, jwtClaim: sub }
          version: { header: X-App-Version }
          anonymous: none
          rules: %[4]s
    gray-dispatch:
      plugin:
        graylane-dispatch:
          timeouts: { idle: 1s }
          lanes:
            canary: { servers: [{ url: %[2]q }] }
            blue:   { servers: [{ url: %[3]q }] }
`, stable, canary, blue, hostileRules)
}

// hostileRules are the rules of both mark middlewares of TestHostileInput.
const hostileRules = `[{ name: testers, lane: canary, users: [alice, "1001"] }, { name: app, lane: blue, versions: ">=2.5.0, <2.6.0" }]`

// hostileCase is one kind of hostile request. build returns the request's headers (and
// raw bytes for cases sent on a bare TCP connection); want is the lane header the backend
// must receive ("" = none) and backend the backend that must answer (default: the lane's, or
// the router's service for no lane); or wantStatus is the status Traefik must answer.
type hostileCase struct {
	name       string
	weight     int
	build      func(rng *rand.Rand) http.Header
	raw        func(rng *rand.Rand) []byte
	want       string
	backend    string
	wantStatus int
}

// wantBackend is the backend that must answer the case's requests.
func (c *hostileCase) wantBackend() string {
	switch {
	case c.backend != "":
		return c.backend
	case c.want == "":
		return "stable"
	}
	return c.want // the lanes' backends are named after them
}

func jwt(payload string) string {
	enc := base64.RawURLEncoding
	return "Bearer " + enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString([]byte("not-a-signature"))
}

// junk returns n random bytes that an HTTP client accepts in a header value:
// printable ASCII including the separators cookies and tokens care about.
func junk(rng *rand.Rand, n int) string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
	b := make([]byte, n)
	for i := range b {
		b[i] = chars[rng.IntN(len(chars))]
	}
	return strings.TrimSpace(string(b)) + "z"
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func hostileCases() []hostileCase {
	return []hostileCase{
		// Spoofed lane headers: stripped, whatever their form.
		{name: "spoof-lane", weight: 4, want: "", build: func(rng *rand.Rand) http.Header {
			lanes := []string{"canary", "blue", "CANARY", " canary ", "canary,blue", "../canary", "blue\t", strings.Repeat("c", 70)}
			return hdr(laneHeader, lanes[rng.IntN(len(lanes))])
		}},
		{name: "spoof-lane-twice", weight: 2, want: "", build: func(*rand.Rand) http.Header {
			return hdr(laneHeader, "canary", laneHeader, "blue", "X-User-Id", "bob")
		}},
		{name: "spoof-lane-lowercase", weight: 2, want: "", build: func(*rand.Rand) http.Header {
			return http.Header{"x-gray-lane": {"canary"}}
		}},
		{name: "spoof-lane-trustedIPs-xff", weight: 2, want: "", build: func(*rand.Rand) http.Header {
			return hdr("X-Route", "trusted", laneHeader, "canary", "X-Forwarded-For", "10.1.2.3", "X-Real-Ip", "10.1.2.3")
		}},
		{name: "tester-with-spoofed-lane", weight: 2, want: "canary", build: func(*rand.Rand) http.Header {
			return hdr("X-User-Id", "alice", laneHeader, "blue")
		}},
		// An inner gateway (incoming: keep) keeps a valid lane, lower-cased; an unknown lane
		// goes on to the router's service with its header; an invalid one is dropped.
		{name: "keep-lane", weight: 1, want: "canary", build: func(rng *rand.Rand) http.Header {
			lanes := []string{"canary", "CANARY", "Canary"}
			return hdr("X-Route", "inner", laneHeader, lanes[rng.IntN(len(lanes))])
		}},
		{name: "keep-unknown-lane", weight: 1, want: "green", backend: "stable", build: func(rng *rand.Rand) http.Header {
			lanes := []string{"green", "GREEN"}
			return hdr("X-Route", "inner", laneHeader, lanes[rng.IntN(len(lanes))])
		}},
		{name: "keep-invalid-lane", weight: 1, want: "", build: func(rng *rand.Rand) http.Header {
			lanes := []string{"bad lane!", strings.Repeat("c", 70), "-x", "ca/nary", "canary;blue", "ｃanary"}
			return hdr("X-Route", "inner", laneHeader, lanes[rng.IntN(len(lanes))])
		}},
		// Oversized headers: within Traefik's 1 MiB limit they pass, beyond it 431.
		{name: "big-header-64KiB", weight: 2, want: "", build: func(rng *rand.Rand) http.Header {
			return hdr("X-Junk", junk(rng, 64<<10), laneHeader, "canary")
		}},
		{name: "big-identity-32KiB", weight: 1, want: "", build: func(rng *rand.Rand) http.Header {
			return hdr("X-User-Id", "alice"+junk(rng, 32<<10), "X-App-Version", "2.7."+strings.Repeat("9", 20<<10))
		}},
		{name: "header-over-limit", weight: 1, wantStatus: http.StatusRequestHeaderFieldsTooLarge, build: func(*rand.Rand) http.Header {
			return hdr("X-Junk", strings.Repeat("j", 1<<20+64<<10), laneHeader, "canary")
		}},
		// Garbage cookies.
		{name: "garbage-cookie", weight: 3, want: "", build: func(rng *rand.Rand) http.Header {
			return hdr("Cookie", junk(rng, 200), laneHeader, "canary")
		}},
		{name: "garbage-uid-cookie", weight: 2, want: "", build: func(rng *rand.Rand) http.Header {
			return hdr("Cookie", "uid=x"+url.QueryEscape(junk(rng, 40))+"; graylane_id="+junk(rng, 10)+";;; =; uid")
		}},
		{name: "uid-cookie-alice", weight: 1, want: "canary", build: func(rng *rand.Rand) http.Header {
			forms := []string{"uid=alice", "a=1; uid=alice", "a=1; uid=alice; b=2", `uid="alice"`}
			return hdr("Cookie", forms[rng.IntN(len(forms))])
		}},
		{name: "ordinary-cookies", weight: 2, want: "", build: func(rng *rand.Rand) http.Header {
			forms := []string{"a=1; b=2", "session=abc; theme=dark; lang=en", "uid=bob; a=1", "a=1;uid=;b=2", "a=1", "graylane_id=123; a=1"}
			return hdr("Cookie", forms[rng.IntN(len(forms))])
		}},
		{name: "header-wins-over-cookie", weight: 1, want: "", build: func(*rand.Rand) http.Header {
			return hdr("X-User-Id", "bob", "Cookie", "uid=alice")
		}},
		// JWTs: garbage, wrong claim types, huge; a well-formed token naming alice is a tester
		// (mark decodes the payload, it does not verify the token).
		{name: "garbage-jwt", weight: 3, want: "", build: func(rng *rand.Rand) http.Header {
			forms := []string{
				"Bearer " + junk(rng, 60),
				"Bearer " + junk(rng, 20) + "." + junk(rng, 20) + "." + junk(rng, 20),
				"Bearer a.b",
				"Bearer ...",
				"Bearer",
				"Basic YWxpY2U6c2VjcmV0",
				"Bearer x." + base64.RawURLEncoding.EncodeToString([]byte("not json")) + ".y",
				"Bearer x.!!!!.y",
			}
			return hdr("Authorization", forms[rng.IntN(len(forms))], laneHeader, "canary")
		}},
		{name: "jwt-odd-sub", weight: 2, want: "", build: func(rng *rand.Rand) http.Header {
			subs := []string{`{"sub":{"id":"alice"}}`, `{"sub":null}`, `{"sub":7}`, `{"sub":true}`, `{"sub":"bob"}`, `{"name":"alice"}`, `[]`, `"alice"`}
			return hdr("Authorization", jwt(subs[rng.IntN(len(subs))]))
		}},
		{name: "jwt-huge", weight: 1, want: "", build: func(rng *rand.Rand) http.Header {
			return hdr("Authorization", jwt(`{"sub":"mallory","pad":"`+strings.Repeat("p", 200<<10)+`"}`))
		}},
		{name: "jwt-alice", weight: 1, want: "canary", build: func(*rand.Rand) http.Header {
			return hdr("Authorization", jwt(`{"sub":"alice"}`))
		}},
		// App versions.
		{name: "invalid-version", weight: 3, want: "", build: func(rng *rand.Rand) http.Header {
			// Invalid, or read leniently still outside >=2.5.0 <2.6.0.
			vs := []string{"2.x.y", "abc", "2..5", "-1.0.0", "2.6.0.0.0.0", "v", "2.7.", "99999999999999999999999.5.0",
				">=2.5.0", "２.５.０", "2.4.9-rc.1+", junk(rng, 30), strings.Repeat("2.", 2000) + "7"}
			return hdr("X-App-Version", vs[rng.IntN(len(vs))], laneHeader, "blue")
		}},
		{name: "version-in-range", weight: 1, want: "blue", build: func(*rand.Rand) http.Header {
			return hdr("X-App-Version", "2.5.3")
		}},
		{name: "version-out-of-range", weight: 1, want: "", build: func(*rand.Rand) http.Header {
			return hdr("X-App-Version", "2.6.0", laneHeader, "blue")
		}},
		// Malformed HTTP on a bare connection: Traefik's server rejects it before any plugin.
		{name: "raw-malformed", weight: 1, wantStatus: http.StatusBadRequest, raw: func(rng *rand.Rand) []byte {
			forms := []string{
				"GET / HTTP/1.1\r\nHost: x\r\nX-Gray-Lane: can\x00ary\r\n\r\n",
				"GET / HTTP/1.1\r\nHost: x\r\nX-User-Id: al\x01ice\r\n\r\n",
				"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
				"GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n",
			}
			return []byte(forms[rng.IntN(len(forms))])
		}},
	}
}

// TestHostileInput sends 10,000 hostile requests (8 at a time) through mark and dispatch.
// Every request must be answered; every one that reaches a backend must land in the lane its
// case names (the backend echoes the lane header it received and is named by lane); Traefik
// must not log a panic or a runtime error.
func TestHostileInput(t *testing.T) {
	total := 10_000
	if long() {
		total = 50_000
	}
	stable, canary, blue := harness.StartBackend(t, "stable"), harness.StartBackend(t, "canary"), harness.StartBackend(t, "blue")
	tr := startTraefik(t, harness.TraefikOptions{
		Dynamic: hostileDynamic(stable.URL, canary.URL, blue.URL),
		// Idle upstream connections close after 1s, so that the goroutine count can
		// return to its level before the load (see below).
		ExtraStatic: "serversTransport: { forwardingTimeouts: { idleConnTimeout: 1s } }",
	})
	tr.WaitRouter(t, "hostile", 60*time.Second)
	tr.WaitRouter(t, "trusted", 60*time.Second)

	cases := hostileCases()
	var schedule []int
	for i, c := range cases {
		for w := 0; w < c.weight; w++ {
			schedule = append(schedule, i)
		}
	}
	const workers = 8
	client := newClient(workers)
	addr := strings.TrimPrefix(tr.URL, "http://")
	byCase := make([]*tally, len(cases))
	for i := range byCase {
		byCase[i] = newTally()
	}

	idle := metrics(t, tr)["go_goroutines"]
	start := time.Now()
	n := runLoad(t.Context(), workers, total, 3*time.Minute, 0, func(i int) {
		ci := schedule[i%len(schedule)]
		c, res := cases[ci], byCase[ci]
		rng := rand.New(rand.NewPCG(uint64(i), 11))
		if c.raw != nil {
			status, err := rawRequest(addr, c.raw(rng))
			switch {
			case err != nil:
				res.fail("%s #%d: %v", c.name, i, err)
			case status != c.wantStatus:
				res.fail("%s #%d: status %d, want %d", c.name, i, status, c.wantStatus)
			default:
				res.ok(fmt.Sprint(status), 0)
			}
			return
		}
		reply, took, err := send(client, request{url: tr.URL + "/p", header: c.build(rng)})
		switch {
		case err != nil && c.wantStatus == http.StatusRequestHeaderFieldsTooLarge && took >= 400*time.Millisecond &&
			(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)):
			// Go's server answers 431 without reading the rest of the headers and resets the
			// connection 500 ms later: a client that stalled that long sees the reset instead.
			res.ok("reset", took)
		case err != nil:
			res.fail("%s #%d: %v", c.name, i, err)
		case c.wantStatus != 0:
			if reply.Status != c.wantStatus {
				res.fail("%s #%d: status %d, want %d", c.name, i, reply.Status, c.wantStatus)
				return
			}
			res.ok(fmt.Sprint(reply.Status), took)
		case reply.Status != http.StatusOK:
			res.fail("%s #%d: status %d: %.200s", c.name, i, reply.Status, reply.Body)
		case reply.Backend() != c.wantBackend() || reply.RequestHeader(laneHeader) != c.want:
			res.fail("%s #%d: answered by %q with lane header %q, want %q with %q", c.name, i,
				reply.Backend(), reply.RequestHeader(laneHeader), c.wantBackend(), c.want)
		default:
			res.ok(reply.Backend(), took)
		}
	})
	took := time.Since(start)

	var failed int
	for i, c := range cases {
		t.Logf("%-26s %s", c.name, byCase[i])
		failed += byCase[i].failures
	}
	t.Logf("%d hostile requests in %s (%d workers), %d failed", n, took.Round(time.Millisecond), workers, failed)
	if n != total {
		t.Errorf("sent %d requests, want %d", n, total)
	}
	for i, c := range cases {
		byCase[i].requireNoFailures(t, c.name)
	}
	if tr.Exited() {
		t.Errorf("traefik exited")
	}
	// No request may still be running inside Traefik (stuck in a plugin): once the client's
	// connections are closed, the goroutine count returns to what it was before the load.
	client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := metrics(t, tr)["go_goroutines"]
		if now <= idle+goroutineNoise {
			t.Logf("traefik goroutines: %.0f before the load, %.0f after it", idle, now)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("traefik has %.0f goroutines 10s after the load, %.0f before it: requests are stuck inside Traefik", now, idle)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	requireNoPanic(t, tr)
}
