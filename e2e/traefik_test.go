package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"gopkg.in/yaml.v3"

	"github.com/graylane/graylane/e2e/harness"
)

// laneConfig is the dynamic configuration of the end-to-end tests: router app (Host app.test)
// → service stable, through mark then dispatch; router facade (Host facade.test) → the same
// through the root catalog plugin. The testers rule sends its users to testersLane.
// With withBad, router bad (Host bad.test) uses middleware gray-bad, whose lane is invalid.
func laneConfig(stable, canary, beta *harness.Backend, testersLane string, withBad bool) string {
	badRouter, badMiddleware := "", ""
	if withBad {
		badRouter, badMiddleware = badRouterYAML, badMiddlewareYAML
	}
	return strings.NewReplacer(
		"STABLE", stable.URL, "CANARY", canary.URL, "BETA", beta.URL, "TESTERS", testersLane,
		"BAD_ROUTER\n", badRouter, "BAD_MIDDLEWARE\n", badMiddleware,
	).Replace(`
http:
  routers:
    app:
      rule: Host(` + "`app.test`" + `)
      entryPoints: [web]
      service: stable
      middlewares: [gray-mark, gray-dispatch]
    facade:
      rule: Host(` + "`facade.test`" + `)
      entryPoints: [web]
      service: stable
      middlewares: [gray]
BAD_ROUTER
  services:
    stable:
      loadBalancer:
        servers: [{url: "STABLE"}]
  middlewares:
BAD_MIDDLEWARE
    gray-mark:
      plugin:
        graylane-mark:
          identity: {header: X-User-Id}
          rules:
            - {name: testers, lane: TESTERS, users: ["1001", "1002"]}
            - {name: beta-pages, lane: beta, path: {prefix: /beta}}
            - {name: region, lane: canary, headers: {X-Region: cn-east}, methods: [GET]}
            - {name: opted-in, lane: beta, cookies: {beta_optin: "1"}}
            - {name: preview, lane: canary, query: {preview: "*"}}
    gray-dispatch:
      plugin:
        graylane-dispatch:
          lanes:
            canary: {servers: [{url: "CANARY"}]}
            beta: {servers: [{url: "BETA"}]}
    gray:
      plugin:
        graylane:
          mark:
            identity: {header: X-User-Id}
            rules:
              - {name: testers, lane: canary, users: ["1001"]}
          dispatch:
            lanes:
              canary: {servers: [{url: "CANARY"}]}
`)
}

const badRouterYAML = `    bad:
      rule: Host(` + "`bad.test`" + `)
      entryPoints: [web]
      service: stable
      middlewares: [gray-bad]
`

const badMiddlewareYAML = `    gray-bad:
      plugin:
        graylane-mark:
          rules:
            - {name: broken, lane: "Not A Lane!", path: {prefix: /}}
`

// TestTraefik runs the pinned Traefik release as a process, with the plugins as local plugins
// and three backend processes, and checks lanes, hot reload under load and bad configuration.
func TestTraefik(t *testing.T) {
	// Registered first, so it runs after every other Cleanup (which stop the processes).
	t.Cleanup(func() {
		if left := harness.LeftoverProcesses(); len(left) > 0 {
			t.Errorf("processes left running: %v", left)
		}
	})

	stable := harness.StartBackend(t, "stable")
	canary := harness.StartBackend(t, "canary")
	beta := harness.StartBackend(t, "beta")
	plugins := harness.DefaultLocalPlugins()
	plugins["graylane"] = "github.com/graylane/graylane"
	tr := harness.StartTraefik(t, harness.TraefikOptions{
		Dynamic:      laneConfig(stable, canary, beta, "canary", false),
		LocalPlugins: plugins,
	})
	tr.WaitRouter(t, "app", 30*time.Second)
	tr.WaitRouter(t, "facade", 30*time.Second)

	t.Run("lanes", func(t *testing.T) { testLanes(t, tr) })
	t.Run("streaming", func(t *testing.T) { testStreaming(t, tr) })
	t.Run("hot reload under load", func(t *testing.T) { testHotReload(t, tr, stable, canary, beta) })
	t.Run("bad config", func(t *testing.T) { testBadConfig(t, tr, stable, canary, beta) })
	t.Run("manifest testData", func(t *testing.T) { testManifestTestData(t, tr, stable) })
}

// testManifestTestData puts each manifest's testData on a router of its own, in a second file
// of the watched directory, and checks Traefik enables the three routers.
func testManifestTestData(t *testing.T, tr *harness.Traefik, stable *harness.Backend) {
	routers := map[string]any{}
	middlewares := map[string]any{}
	for alias, dir := range map[string]string{"graylane": ".", "graylane-mark": "mark", "graylane-dispatch": "dispatch"} {
		data, err := os.ReadFile(filepath.Join(harness.RepoRoot(), dir, ".traefik.yml"))
		if err != nil {
			t.Fatal(err)
		}
		var manifest struct {
			TestData map[string]any `yaml:"testData"`
		}
		if err := yaml.Unmarshal(data, &manifest); err != nil {
			t.Fatalf("%s/.traefik.yml: %v", dir, err)
		}
		routers["testdata-"+alias] = map[string]any{
			"rule":        "Host(`testdata-" + alias + ".test`)",
			"entryPoints": []string{"web"},
			"service":     "testdata",
			"middlewares": []string{"testdata-" + alias},
		}
		middlewares["testdata-"+alias] = map[string]any{"plugin": map[string]any{alias: manifest.TestData}}
	}
	config, err := yaml.Marshal(map[string]any{"http": map[string]any{
		"routers":     routers,
		"middlewares": middlewares,
		"services":    map[string]any{"testdata": map[string]any{"loadBalancer": map[string]any{"servers": []any{map[string]any{"url": stable.URL}}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tr.WriteDynamicFile(t, "testdata.yml", string(config))
	for alias := range routers {
		tr.WaitRouter(t, alias, 20*time.Second)
		host := strings.TrimPrefix(alias, "testdata-") + ".test"
		if r := harness.Do(t, http.MethodGet, tr.URL+"/", map[string]string{"Host": "testdata-" + host}, nil); r.Status != http.StatusOK {
			t.Errorf("router %s answers %d: %s", alias, r.Status, r.Body)
		}
	}
}

func testLanes(t *testing.T, tr *harness.Traefik) {
	for _, c := range []struct {
		name, host, path string
		headers          map[string]string
		backend, lane    string
	}{
		{"header and method to canary", "app.test", "/", map[string]string{"X-Region": "cn-east"}, "canary", "canary"},
		{"other header value to stable", "app.test", "/", map[string]string{"X-Region": "cn-west"}, "stable", ""},
		{"cookie to beta", "app.test", "/", map[string]string{"Cookie": "theme=dark; beta_optin=1"}, "beta", "beta"},
		{"other cookie value to stable", "app.test", "/", map[string]string{"Cookie": "beta_optin=0"}, "stable", ""},
		{"query parameter present to canary", "app.test", "/?a=1&preview=", nil, "canary", "canary"},
		{"other query parameter to stable", "app.test", "/?previews=1", nil, "stable", ""},
		{"tester to canary", "app.test", "/", map[string]string{"X-User-Id": "1001"}, "canary", "canary"},
		{"other user to stable", "app.test", "/", map[string]string{"X-User-Id": "2002"}, "stable", ""},
		{"anonymous to stable", "app.test", "/", nil, "stable", ""},
		{"spoofed header stripped", "app.test", "/", map[string]string{"X-User-Id": "2002", "X-Gray-Lane": "canary"}, "stable", ""},
		{"spoofed header cannot choose beta", "app.test", "/", map[string]string{"X-Gray-Lane": "beta"}, "stable", ""},
		{"path prefix to beta", "app.test", "/beta/page", nil, "beta", "beta"},
		{"catalog plugin: tester to canary", "facade.test", "/", map[string]string{"X-User-Id": "1001"}, "canary", "canary"},
		{"catalog plugin: spoofed header stripped", "facade.test", "/", map[string]string{"X-User-Id": "7", "X-Gray-Lane": "canary"}, "stable", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			headers := map[string]string{"Host": c.host}
			for k, v := range c.headers {
				headers[k] = v
			}
			r := harness.Do(t, http.MethodGet, tr.URL+c.path, headers, nil)
			if r.Status != http.StatusOK || r.Backend() != c.backend {
				t.Fatalf("got %d from %q (%s), want 200 from %q", r.Status, r.Backend(), r.Body, c.backend)
			}

			if got := r.RequestHeader("X-Gray-Lane"); got != c.lane {
				t.Errorf("backend saw X-Gray-Lane %q, want %q", got, c.lane)
			}
			// Lane servers (dispatch's proxy) get the forwarded headers the router's service
			// (Traefik's proxy) gets.
			for name, want := range map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Real-Ip":         "127.0.0.1",
				"X-Forwarded-Proto": "http",
				"X-Forwarded-Host":  c.host,
				"X-Forwarded-Port":  "80", // Traefik takes it from the Host header, which has no port
			} {
				if got := r.RequestHeader(name); got != want {
					t.Errorf("backend %s saw %s %q, want %q", r.Backend(), name, got, want)
				}
			}
			if r.RequestHeader("X-Forwarded-Server") == "" {
				t.Errorf("backend %s saw no X-Forwarded-Server: %v", r.Backend(), r.JSON["headers"])
			}
		})
	}
	t.Run("method not in the rule to stable", func(t *testing.T) {
		// The region rule takes GET only.
		r := harness.Do(t, http.MethodPost, tr.URL+"/", map[string]string{"Host": "app.test", "X-Region": "cn-east"}, []byte("x"))
		if r.Status != http.StatusOK || r.Backend() != "stable" {
			t.Fatalf("POST with X-Region cn-east: %d from %q, want 200 from stable", r.Status, r.Backend())
		}
	})
}

// testStreaming checks that a lane's server-sent events arrive one by one and that a WebSocket
// upgrade works through the dispatch middleware.
func testStreaming(t *testing.T, tr *harness.Traefik) {
	t.Run("sse", func(t *testing.T) { checkEventStream(t, http.DefaultClient, tr.URL, "app.test", nil) })
	t.Run("websocket", func(t *testing.T) {
		checkWebSocketEcho(t, tr.URL, http.Header{"Host": {"app.test"}, "X-User-Id": {"1001"}}, "canary", "one", "two")
	})
}

// checkEventStream reads the backend's event stream (/sse: 3 events, 3 s apart) of tester 1001
// through Traefik at base, Host host, with client, and checks that the canary sends it, that its
// first event arrives within 2 s (against a 3 s gap: not buffered) and that every event arrives.
// check, if not nil, checks the response too.
func checkEventStream(t *testing.T, client *http.Client, base, host string, check func(*testing.T, *http.Response)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?n=3&gap=3s", nil)
	req.Host = host
	req.Header.Set("X-User-Id", "1001")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if check != nil {
		check(t, resp)
	}
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != "id: 0\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("first event took %s: the stream is buffered", d)
	}
	if got := resp.Header.Get("X-Backend"); got != "canary" {
		t.Errorf("events from %q, want canary", got)
	}
	rest, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("rest of the stream: %v", err)
	}
	if n := strings.Count(string(rest), "data: canary "); n != 3 {
		t.Errorf("%d events in all, want 3: %q", n, line+string(rest))
	}
	if d := time.Since(start); d < 5*time.Second {
		t.Errorf("the stream ended after %s, before its two 3 s gaps", d)
	}
}

// checkWebSocketEcho opens a WebSocket to the backend's /ws echo through Traefik at url, with the
// given request headers, and checks that wantBackend upgraded it and echoes each message.
func checkWebSocketEcho(t *testing.T, url string, header http.Header, wantBackend string, messages ...string) {
	t.Helper()
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := dialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/ws", header) //nolint:bodyclose // the 101 has no body; ws.Close closes the connection
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	defer ws.Close()
	if got := resp.Header.Get("X-Backend"); got != wantBackend {
		t.Errorf("upgraded by %q, want %s", got, wantBackend)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, msg := range messages {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, got, err)
		}
	}
}

// loadResult counts a load loop's answers.
type loadResult struct {
	mu       sync.Mutex
	total    int
	failures []string
	// last lists the answers for user 1001, in the order they came.
	last []answer
}

// answer is the backend that answered a request, and when the request was sent.
type answer struct {
	backend string
	sent    time.Time
}

// testHotReload moves the testers' rule from lane canary to lane beta while four clients send
// about 50 requests a second, and checks the move shows within seconds with no failed request.
func testHotReload(t *testing.T, tr *harness.Traefik, stable, canary, beta *harness.Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logBefore := len(tr.Log())
	var stop atomic.Bool
	res := &loadResult{}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			users := []string{"1001", "2002"}
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				u := users[(i+g)%2]
				sent := time.Now()
				r, err := harness.TryDo(http.MethodGet, tr.URL+"/load", map[string]string{"Host": "app.test", "X-User-Id": u}, nil)
				res.mu.Lock()
				res.total++
				switch {
				case err != nil:
					res.failures = append(res.failures, err.Error())
				case r.Status != http.StatusOK:
					res.failures = append(res.failures, fmt.Sprintf("%d %s", r.Status, r.Body))
				case u == "2002" && r.Backend() != "stable":
					res.failures = append(res.failures, "user 2002 answered by "+r.Backend())
				case u == "1001":
					res.last = append(res.last, answer{backend: r.Backend(), sent: sent})
				}
				res.mu.Unlock()
				time.Sleep(80 * time.Millisecond)
			}
		}(g)
	}
	finish := func() {
		stop.Store(true)
		wg.Wait()
	}
	defer finish()

	// A second of load, or more until user 1001 was answered (a loaded machine can stall).
	var before []answer
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(50 * time.Millisecond) {
		res.mu.Lock()
		before = append(before[:0], res.last...)
		res.mu.Unlock()
		if len(before) > 0 && time.Since(start) >= time.Second {
			break
		}
	}
	if len(before) == 0 {
		t.Fatal("no answer for user 1001 in 10 s of load")
	}
	for _, a := range before {
		if a.backend != "canary" {
			t.Fatalf("before the reload user 1001 went to %q: %v", a.backend, before)
		}
	}

	reloaded := time.Now()
	tr.WriteDynamic(t, laneConfig(stable, canary, beta, "beta", false))
	switched := time.Duration(0)
	var seen time.Time // when the switch was seen: requests sent after it must all go to beta
	for switched == 0 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		res.mu.Lock()
		if n := len(res.last); n > 0 && res.last[n-1].backend == "beta" {
			seen = time.Now()
			switched = seen.Sub(reloaded)
		}
		res.mu.Unlock()
	}
	if switched == 0 {
		t.Fatalf("user 1001 still not in lane beta 30s after the reload")
	}
	t.Logf("the reload showed after %s", switched.Round(10*time.Millisecond))
	if switched > 10*time.Second {
		t.Errorf("the reload took %s to show", switched)
	}
	time.Sleep(1500 * time.Millisecond)
	// At least 100 requests in all, however slowly a loaded machine answers them (within ctx).
	for sent := 0; sent < 100 && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		res.mu.Lock()
		sent = res.total
		res.mu.Unlock()
	}
	finish()

	// A request sent before the switch was seen may have been routed under the old
	// configuration and answered later: only those sent after it count.
	var after []answer
	for _, a := range res.last {
		if a.sent.After(seen) {
			after = append(after, a)
		}
	}
	for _, a := range after {
		if a.backend != "beta" {
			t.Errorf("after the switch user 1001 went to %q: %v", a.backend, after)
			break
		}
	}
	t.Logf("%d requests, %d after the switch", res.total, len(after))
	if len(after) == 0 {
		t.Errorf("no request for user 1001 was sent after the switch was seen")
	}
	if len(res.failures) > 0 {
		t.Errorf("%d of %d requests failed during the reload, first: %v", len(res.failures), res.total, res.failures[0])
	}
	if res.total < 100 {
		t.Errorf("only %d requests were sent", res.total)
	}

	// Nothing is logged per request at the default level, and the reload logs no error.
	logged := tr.Log()[logBefore:]
	if n := strings.Count(logged, "\n"); n > 20 {
		t.Errorf("%d log lines for %d requests and one reload:\n%s", n, res.total, logged)
	}
	if strings.Contains(logged, " ERR ") {
		t.Errorf("errors logged during the reload:\n%s", logged)
	}
}

// testBadConfig adds a router whose mark configuration is invalid: Traefik must log our error
// naming the field, and the other routers keep serving.
func testBadConfig(t *testing.T, tr *harness.Traefik, stable, canary, beta *harness.Backend) {
	tr.WriteDynamic(t, laneConfig(stable, canary, beta, "canary", true))
	tr.WaitLog(t, "rules[0].lane", 20*time.Second)

	r := tr.WaitRouterStatus(t, "bad", "disabled", 10*time.Second)
	if !strings.Contains(strings.Join(r.Error, " "), "rules[0].lane") {
		t.Errorf("router bad errors %v do not name rules[0].lane", r.Error)
	}
	for i := 0; i < 20; i++ {
		got := harness.Do(t, http.MethodGet, tr.URL+"/", map[string]string{"Host": "app.test", "X-User-Id": "1001"}, nil)
		if got.Status != http.StatusOK || got.Backend() != "canary" {
			t.Fatalf("router app answers %d from %q after the bad reload", got.Status, got.Backend())
		}
	}
	got := harness.Do(t, http.MethodGet, tr.URL+"/", map[string]string{"Host": "bad.test"}, nil)
	if got.Status == http.StatusOK {
		t.Errorf("router bad serves 200 with a broken middleware")
	}
	if tr.Exited() {
		t.Fatal("traefik exited")
	}
}
