package e2e_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// http2Config is the dynamic configuration of TestTraefikHTTP2: router h2 (Host h2.test) on the
// TLS entry point websecure, with Traefik's default certificate, through mark then dispatch.
// Lane canary's first server is a closed port, so that a request may be retried on the second.
func http2Config(stable, canary *harness.Backend, closedURL string) string {
	return strings.NewReplacer("STABLE", stable.URL, "CANARY", canary.URL, "CLOSED", closedURL).Replace(`
http:
  routers:
    h2:
      rule: Host(` + "`h2.test`" + `)
      entryPoints: [websecure]
      service: stable
      middlewares: [h2-mark, h2-dispatch]
      tls: {}
  services:
    stable:
      loadBalancer:
        servers: [{url: "STABLE"}]
  middlewares:
    h2-mark:
      plugin:
        graylane-mark:
          identity: {header: X-User-Id}
          ruleHeader: X-Gray-Rule
          rules:
            - {name: testers, lane: canary, users: ["1001"]}
    h2-dispatch:
      plugin:
        graylane-dispatch:
          servedByHeader: X-Gray-Upstream
          lanes:
            canary: {servers: [{url: "CLOSED"}, {url: "CANARY"}]}
`)
}

// TestTraefikHTTP2 sends HTTP/2 over TLS from the client to the pinned Traefik, as browsers do,
// through mark and dispatch: lanes, the lane header stripped, blanks around the user ID, the
// retry past a refused server, no internal marker among the response headers, and an event
// stream that is not buffered.
func TestTraefikHTTP2(t *testing.T) {
	stable := harness.StartBackend(t, "stable")
	canary := harness.StartBackend(t, "canary")
	closedURL := "http://127.0.0.1:" + strconv.Itoa(harness.FreePort(t)) // nothing listens there
	secure := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	tr := harness.StartTraefik(t, harness.TraefikOptions{
		Dynamic:     http2Config(stable, canary, closedURL),
		ExtraStatic: "entryPoints: {websecure: {address: \"" + secure + "\", transport: {lifeCycle: {graceTimeOut: 3s}}}}",
	})
	tr.WaitRouter(t, "h2", 30*time.Second)
	base := "https://" + secure

	client := &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // Traefik's default self-signed certificate
			ForceAttemptHTTP2: true,
		},
	}
	defer client.CloseIdleConnections()

	// do sends one request over HTTP/2, checks what every answer must be and returns it with the
	// backend's JSON description of the request.
	do := func(t *testing.T, path string, headers map[string]string) *harness.Reply {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "h2.test"
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		reply := &harness.Reply{Status: resp.StatusCode, Header: resp.Header}
		if reply.Body, err = io.ReadAll(resp.Body); err != nil {
			t.Fatalf("GET %s: body: %v", path, err)
		}
		checkHTTP2Response(t, resp)
		if err := json.Unmarshal(reply.Body, &reply.JSON); err != nil || reply.Status != http.StatusOK {
			t.Fatalf("GET %s: %d, want 200 with a JSON object: %q", path, reply.Status, reply.Body)
		}
		return reply
	}

	for _, c := range []struct {
		name          string
		headers       map[string]string
		backend, lane string
	}{
		{"tester to canary", map[string]string{"X-User-Id": "1001"}, "canary", "canary"},
		{"other user to stable", map[string]string{"X-User-Id": "2002"}, "stable", ""},
		{"anonymous to stable", nil, "stable", ""},
		{"spoofed header stripped", map[string]string{"X-User-Id": "2002", "X-Gray-Lane": "canary"}, "stable", ""},
		// Go's HTTP/2 client sends the blanks (a field value may hold them; RFC 9113 calls a
		// request with them malformed, but Go's HTTP/2 server takes it as it is).
		{"blanks around the user ID", map[string]string{"X-User-Id": " 1001 "}, "canary", "canary"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Several times: lane canary's balancer (smooth weighted round robin, equal weights)
			// picks each of its two servers once in any two picks, so one of the tester's first
			// two requests goes to the refused server first and is retried on the backend.
			for i := 0; i < 4; i++ {
				reply := do(t, "/", c.headers)
				if got := reply.Backend(); got != c.backend {
					t.Fatalf("request %d answered by %q, want %q: %v", i, got, c.backend, reply.JSON)
				}
				if got := reply.RequestHeader("X-Gray-Lane"); got != c.lane {
					t.Errorf("backend saw X-Gray-Lane %q, want %q", got, c.lane)
				}
				if got := reply.RequestHeader("X-Forwarded-Proto"); got != "https" {
					t.Errorf("backend saw X-Forwarded-Proto %q, want https", got)
				}
				rule, upstream := reply.Header.Get("X-Gray-Rule"), reply.Header.Get("X-Gray-Upstream")
				if c.lane == "canary" {
					if rule != "testers" {
						t.Errorf("X-Gray-Rule %q, want testers", rule)
					}
					if want := "canary " + canary.URL; upstream != want {
						t.Errorf("X-Gray-Upstream %q, want %q", upstream, want)
					}
				} else if rule != "" || upstream != "" {
					t.Errorf("X-Gray-Rule %q, X-Gray-Upstream %q on a stable answer", rule, upstream)
				}
			}
		})
	}

	t.Run("sse", func(t *testing.T) {
		checkEventStream(t, client, base, "h2.test", checkHTTP2Response)
	})
}

// checkHTTP2Response checks that resp came over HTTP/2 and carries no internal marker of
// dispatch (a header name with a blank, or one starting with "graylane"). Go's HTTP/2 server
// drops a header name that is not a token, so a leaked marker with a blank would not show here;
// one under another name would.
func checkHTTP2Response(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.ProtoMajor != 2 {
		t.Errorf("answered over %s, want HTTP/2", resp.Proto)
	}
	for name := range resp.Header {
		if strings.ContainsAny(name, " \t") || strings.HasPrefix(strings.ToLower(name), "graylane") {
			t.Errorf("response header %q: an internal marker reached the client", name)
		}
	}
}
