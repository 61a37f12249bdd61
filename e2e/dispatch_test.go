package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// dispatchConfig: router app → service stable through dispatch alone (the lane header comes from
// the client, as behind an edge that marked it); lane canary has two servers weighted 3:1; lane
// refused has a server that refuses connections (passive health off, so it is tried every other
// request) and c2; lane sticky has c1 and c2 with sticky sessions; lane gone has only a server
// that refuses connections, so its requests go to the fallback, next.
func dispatchConfig(stable, c1, c2 *harness.Backend) string {
	return strings.NewReplacer("STABLE", stable.URL, "C1", c1.URL, "C2", c2.URL).Replace(`
http:
  routers:
    app:
      rule: PathPrefix(` + "`/`" + `)
      entryPoints: [web]
      service: stable
      middlewares: [gray-dispatch]
  services:
    stable:
      loadBalancer:
        servers: [{url: "STABLE"}]
  middlewares:
    gray-dispatch:
      plugin:
        graylane-dispatch:
          lanes:
            canary:
              servers:
                - {url: "C1", weight: 3}
                - {url: "C2", weight: 1}
            refused:
              servers:
                - {url: "http://127.0.0.1:1"}
                - {url: "C2"}
            sticky:
              servers: [{url: "C1"}, {url: "C2"}]
              sticky: {cookie: {httpOnly: true}}
            gone:
              servers: [{url: "http://127.0.0.1:1"}]
          health: {maxFails: 0}
`)
}

// TestDispatchInTraefik checks dispatch's weights, streamed uploads, retries, https servers and
// configuration errors in a real Traefik.
func TestDispatchInTraefik(t *testing.T) {
	stable := harness.StartBackend(t, "stable")
	c1 := harness.StartBackend(t, "c1")
	c2 := harness.StartBackend(t, "c2")
	tr := harness.StartTraefik(t, harness.TraefikOptions{Dynamic: dispatchConfig(stable, c1, c2)})
	tr.WaitRouter(t, "app", 60*time.Second)

	t.Run("weights 3:1 over 2000 requests", func(t *testing.T) {
		counts := map[string]int{}
		for i := 0; i < 2000; i++ {
			counts[harness.Do(t, "GET", tr.URL+"/", map[string]string{"X-Gray-Lane": "canary"}, nil).Backend()]++
		}
		share := float64(counts["c1"]) / 2000
		if counts["c1"]+counts["c2"] != 2000 || share < 0.70 || share > 0.80 {
			t.Fatalf("answers %v: c1 share %.3f, want 0.75 ± 0.05", counts, share)
		}
	})

	t.Run("50 MB upload streamed", func(t *testing.T) {
		const size = 50 << 20
		before := peakRSS(t, tr.PID())
		req, err := http.NewRequest(http.MethodPost, tr.URL+"/upload", io.LimitReader(zeros{}, size))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Gray-Lane", "canary")
		resp, err := harness.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got struct {
			Backend string
			Bytes   int
		}
		_ = json.Unmarshal(body, &got)
		// A lane server received it all (the router's own service answers /upload as well).
		if resp.StatusCode != http.StatusOK || got.Bytes != size || got.Backend != "c1" && got.Backend != "c2" {
			t.Fatalf("upload: %d %s, want all %d bytes at c1 or c2", resp.StatusCode, body, size)
		}
		if grown := peakRSS(t, tr.PID()) - before; grown > 25<<20 {
			t.Fatalf("Traefik's peak memory grew by %d MiB for a 50 MiB upload", grown>>20)
		}
	})

	t.Run("a body goes to the next server when the first refuses the connection", func(t *testing.T) {
		body := []byte(strings.Repeat("b", 64<<10))
		for i := 0; i < 20; i++ {
			r := harness.Do(t, "POST", tr.URL+"/upload", map[string]string{"X-Gray-Lane": "refused"}, body)
			if r.Status != http.StatusOK || r.Backend() != "c2" || r.JSON["bytes"] != float64(len(body)) {
				t.Fatalf("POST %d: %d from %q: %s", i, r.Status, r.Backend(), r.Body)
			}
		}
	})

	t.Run("a WebSocket the lane cannot take upgrades through the fallback", func(t *testing.T) {
		checkWebSocketEcho(t, tr.URL, http.Header{"X-Gray-Lane": {"gone"}}, "stable", "one")
	})

	t.Run("sticky sessions", func(t *testing.T) {
		cookies := map[string]string{}
		for i := 0; i < 2; i++ {
			r := harness.Do(t, "GET", tr.URL+"/", map[string]string{"X-Gray-Lane": "sticky"}, nil)
			set := r.Header.Get("Set-Cookie")
			if r.Status != http.StatusOK || !strings.HasPrefix(set, "graylane_server_sticky=") || !strings.Contains(set, "; HttpOnly") {
				t.Fatalf("request %d without a cookie: %d from %q, Set-Cookie %q", i, r.Status, r.Backend(), set)
			}
			cookies[r.Backend()] = strings.SplitN(set, ";", 2)[0]
		}
		if len(cookies) != 2 {
			t.Fatalf("two clients without a cookie went to %v, want c1 and c2", cookies)
		}
		for backend, cookie := range cookies {
			for i := 0; i < 10; i++ {
				r := harness.Do(t, "GET", tr.URL+"/", map[string]string{"X-Gray-Lane": "sticky", "Cookie": cookie}, nil)
				if r.Backend() != backend || r.Header.Get("Set-Cookie") != "" {
					t.Fatalf("cookie %s: answered by %q (Set-Cookie %q), want %s", cookie, r.Backend(), r.Header.Get("Set-Cookie"), backend)
				}
			}
		}
	})

	t.Run("https servers checked against tls.rootCAs", func(t *testing.T) {
		certFile, keyFile := harness.TLSCertificate(t)
		secure := harness.StartBackend(t, "secure", "-tls-cert", certFile, "-tls-key", keyFile)
		tr.WriteDynamicFile(t, "tls.yml", strings.NewReplacer("{{secure}}", secure.URL, "{{ca}}", certFile).Replace(`
http:
  routers:
    trusted:
      rule: Host(`+"`trusted.test`"+`)
      entryPoints: [web]
      service: stable
      middlewares: [gray-trusted]
    untrusted:
      rule: Host(`+"`untrusted.test`"+`)
      entryPoints: [web]
      service: stable
      middlewares: [gray-untrusted]
  middlewares:
    gray-trusted:
      plugin:
        graylane-dispatch:
          lanes: {secure: {servers: [{url: "{{secure}}"}], fallback: none}}
          tls: {rootCAs: ["{{ca}}"]}
    gray-untrusted:
      plugin:
        graylane-dispatch:
          lanes: {secure: {servers: [{url: "{{secure}}"}], fallback: none}}
`))
		tr.WaitRouter(t, "trusted", 30*time.Second)
		tr.WaitRouter(t, "untrusted", 30*time.Second)
		if r := harness.Do(t, "GET", tr.URL+"/", map[string]string{"Host": "trusted.test", "X-Gray-Lane": "secure"}, nil); r.Status != http.StatusOK || r.Backend() != "secure" {
			t.Fatalf("with the CA in tls.rootCAs: %d from %q: %s", r.Status, r.Backend(), r.Body)
		}
		if r := harness.Do(t, "GET", tr.URL+"/", map[string]string{"Host": "untrusted.test", "X-Gray-Lane": "secure"}, nil); r.Status != http.StatusBadGateway {
			t.Fatalf("with the system's roots: %d from %q, want 502", r.Status, r.Backend())
		}
		tr.WaitLog(t, "failed to verify certificate", 10*time.Second)
	})

	t.Run("bad dispatch configuration", func(t *testing.T) {
		tr.WriteDynamicFile(t, "bad.yml", `
http:
  routers:
    bad:
      rule: Host(`+"`bad.test`"+`)
      entryPoints: [web]
      service: stable
      middlewares: [gray-bad]
  middlewares:
    gray-bad:
      plugin:
        graylane-dispatch:
          lanes:
            canary:
              servers: [{url: "http://127.0.0.1:1", weight: 5000}]
`)
		router := tr.WaitRouterStatus(t, "bad", "disabled", 30*time.Second)
		if !strings.Contains(strings.Join(router.Error, " "), "lanes.canary.servers[0].weight") {
			t.Errorf("router error %v does not name the field", router.Error)
		}
		tr.WaitLog(t, "lanes.canary.servers[0].weight", 10*time.Second)
		if got := harness.Do(t, "GET", tr.URL+"/", map[string]string{"X-Gray-Lane": "canary"}, nil); got.Status != 200 {
			t.Fatalf("router app answered %d while another router's configuration was bad", got.Status)
		}
	})
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0
	}
	return len(p), nil
}

// peakRSS returns the process's peak resident memory (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, err := strconv.Atoi(strings.Fields(line)[1])
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}
