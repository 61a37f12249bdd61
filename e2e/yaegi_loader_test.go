package e2e_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/traefik/traefik/v3/pkg/plugins"
	"gopkg.in/yaml.v3"

	"github.com/graylane/graylane/e2e/harness"
)

// The three plugins as Traefik declares them: alias → module name.
var localPlugins = map[string]string{
	"graylane":          "github.com/graylane/graylane",
	"graylane-mark":     "github.com/graylane/graylane/mark",
	"graylane-dispatch": "github.com/graylane/graylane/dispatch",
}

// yaegiPlugins prepares a fresh working directory laid out as for a real Traefik
// (./plugins-local/src/...), checks the manifests as Traefik does at start-up, and returns a
// loader: load(t, alias) runs Traefik's own plugin loader (pkg/plugins.NewBuilder, which
// interprets the plugin in Yaegi with the standard library symbols only) for one plugin,
// once, and fails t if it does not load. Loading each plugin alone keeps one plugin's
// failure from hiding the others' results (Traefik itself would disable all of them).
func yaegiPlugins(t *testing.T) func(t *testing.T, alias string) *plugins.Builder {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	harness.InstallPlugins(t, dir, nil)
	descs := map[string]plugins.LocalDescriptor{}
	for alias, module := range localPlugins {
		descs[alias] = plugins.LocalDescriptor{ModuleName: module}
	}
	if err := plugins.SetupLocalPlugins(descs); err != nil {
		t.Errorf("SetupLocalPlugins (manifest checks): %v", err)
	}
	type result struct {
		builder *plugins.Builder
		err     error
	}
	loaded := map[string]result{}
	return func(t *testing.T, alias string) *plugins.Builder {
		t.Helper()
		r, ok := loaded[alias]
		if !ok {
			start := time.Now()
			r.builder, r.err = plugins.NewBuilder(nil, nil, map[string]plugins.LocalDescriptor{alias: descs[alias]})
			loaded[alias] = r
			t.Logf("Yaegi loaded %s in %s", alias, time.Since(start).Round(time.Millisecond))
		}
		if r.err != nil {
			t.Fatalf("Traefik's loader cannot load %s: %v", alias, r.err)
		}
		return r.builder
	}
}

// newHandler builds an interpreted middleware the way Traefik does for a router: decode the
// configuration into the plugin's CreateConfig (Build), then call New (the constructor).
func newHandler(b *plugins.Builder, alias string, config map[string]any, next http.Handler) (http.Handler, error) {
	construct, err := b.Build(alias, config, "gray@file")
	if err != nil {
		return nil, err
	}
	return construct(context.Background(), next)
}

// yamlMap parses a YAML mapping.
func yamlMap(t *testing.T, text string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(text), &m); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, text)
	}
	return m
}

// nextHandler stands for the router's own service: it answers "next lane=<lane header>".
var nextHandler = http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
	fmt.Fprintf(rw, "next lane=%s", req.Header.Get("X-Gray-Lane"))
})

// echoServer is a lane server: it answers "<name> lane=<lane header> host=<host> xff=<X-Forwarded-For>".
func echoServer(t *testing.T, name string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(rw, "%s lane=%s host=%s xff=%s", name, req.Header.Get("X-Gray-Lane"), req.Host, req.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// deadURL returns a loopback URL on which nothing listens.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

// request describes one request sent through a handler and what must come back.
type request struct {
	method  string // default GET
	target  string // default /
	headers map[string]string
	remote  string // RemoteAddr, default 192.0.2.1:1234
	// want is the body prefix expected (e.g. "next lane=canary"); wantStatus is checked when set.
	want       string
	wantStatus int
	// wantHeader lists response headers that must be set (a value of "*" means present).
	wantHeader map[string]string
}

func serve(h http.Handler, r request) *httptest.ResponseRecorder {
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	target := r.target
	if target == "" {
		target = "/"
	}
	req := httptest.NewRequest(method, "http://gray.test"+target, nil)
	if r.remote != "" {
		req.RemoteAddr = r.remote
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func check(t *testing.T, h http.Handler, i int, r request) {
	t.Helper()
	// An interpreted handler that loops forever must fail the test, not hang it.
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- serve(h, r) }()
	var rec *httptest.ResponseRecorder
	select {
	case rec = <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("request %d %s %v: no answer after 5s (the handler hangs)", i, r.target, r.headers)
	}
	body, _ := io.ReadAll(rec.Body)
	if r.wantStatus != 0 && rec.Code != r.wantStatus {
		t.Errorf("request %d %s %v: status %d, want %d (body %q)", i, r.target, r.headers, rec.Code, r.wantStatus, body)
	}
	if r.want != "" && !strings.HasPrefix(string(body), r.want) {
		t.Errorf("request %d %s %v: got %q, want %q...", i, r.target, r.headers, body, r.want)
	}
	for name, want := range r.wantHeader {
		got := rec.Header().Get(name)
		if (want == "*" && got == "") || (want != "*" && got != want) {
			t.Errorf("request %d %s %v: response header %s = %q, want %q", i, r.target, r.headers, name, got, want)
		}
	}
}

// bucket is the documented percentage bucket: the first 8 bytes of SHA-256(salt ":" key),
// big-endian, modulo 10000.
func bucket(salt, key string) uint64 {
	sum := sha256.Sum256([]byte(salt + ":" + key))
	return binary.BigEndian.Uint64(sum[:8]) % 10000
}

// TestYaegiLoader loads the three plugins exactly as Traefik v3.6.12 does and runs requests
// through the interpreted handlers. One interpreter per plugin serves all the subtests.
func TestYaegiLoader(t *testing.T) {
	load := yaegiPlugins(t)
	canary := echoServer(t, "canary")
	beta := echoServer(t, "beta")

	t.Run("testData", func(t *testing.T) {
		for alias, module := range localPlugins {
			t.Run(alias, func(t *testing.T) {
				manifest, err := plugins.ReadManifest("./plugins-local/", module)
				if err != nil {
					t.Fatal(err)
				}
				if manifest.TestData == nil {
					t.Fatal("manifest has no testData")
				}
				if _, err := newHandler(load(t, alias), alias, manifest.TestData, nextHandler); err != nil {
					t.Fatalf("testData rejected: %v", err)
				}
			})
		}
	})

	t.Run("mark", func(t *testing.T) {
		manifest, err := plugins.ReadManifest("./plugins-local/", localPlugins["graylane-mark"])
		if err != nil {
			t.Fatal(err)
		}
		h, err := newHandler(load(t, "graylane-mark"), "graylane-mark", manifest.TestData, nextHandler)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range []request{
			{headers: map[string]string{"X-User-Id": "1001"}, want: "next lane=canary"},
			{headers: map[string]string{"X-User-Id": "2002"}, want: "next lane="},
			{headers: map[string]string{"X-User-Id": "2002", "X-Gray-Lane": "canary"}, want: "next lane="},
			{headers: map[string]string{"X-Gray-Lane": "beta"}, want: "next lane="},
			{target: "/beta/page", want: "next lane=canary"},
		} {
			check(t, h, i, r)
		}
	})

	t.Run("dispatch", func(t *testing.T) {
		h, err := newHandler(load(t, "graylane-dispatch"), "graylane-dispatch", yamlMap(t, `
lanes:
  canary:
    servers: [{url: "`+canary.URL+`"}]
`), nextHandler)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range []request{
			{headers: map[string]string{"X-Gray-Lane": "canary"}, want: "canary lane=canary"},
			{want: "next lane="},
		} {
			check(t, h, i, r)
		}
	})

	t.Run("facade", func(t *testing.T) {
		manifest, err := plugins.ReadManifest("./plugins-local/", localPlugins["graylane"])
		if err != nil {
			t.Fatal(err)
		}
		config := manifest.TestData
		config["dispatch"] = yamlMap(t, `lanes: {canary: {servers: [{url: "`+canary.URL+`"}]}}`)
		h, err := newHandler(load(t, "graylane"), "graylane", config, nextHandler)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range []request{
			{headers: map[string]string{"X-User-Id": "1001"}, want: "canary lane=canary"},
			{headers: map[string]string{"X-User-Id": "2002", "X-Gray-Lane": "canary"}, want: "next lane="},
			{target: "/beta/x", want: "canary lane=canary"},
		} {
			check(t, h, i, r)
		}
	})

	t.Run("concurrent requests", func(t *testing.T) {
		h, err := newHandler(load(t, "graylane"), "graylane", yamlMap(t, `
mark:
  identity: {header: X-User-Id}
  rules:
    - {name: testers, lane: canary, users: ["1"]}
    - {name: half, lane: beta, percent: 50}
dispatch:
  lanes:
    canary: {servers: [{url: "`+canary.URL+`"}]}
    beta: {servers: [{url: "`+beta.URL+`"}]}
`), nextHandler)
		if err != nil {
			t.Fatal(err)
		}
		testConcurrent(t, h)
	})

	t.Run("concurrent mark features", func(t *testing.T) {
		config := `
identity: {header: X-User-Id, cookie: uid, query: uid}
version: {header: X-App-Version}
anonymous: cookie
ruleHeader: X-Gray-Rule
rules:
  - {name: vip, lane: canary, users: ["1", "2"]}
  - {name: new-app, lane: canary, versions: ">=2.0.0, <3 || ~3.1"}
  - {name: api, lane: beta, path: {regex: "^/api/v[0-9]+/"}, methods: [POST]}
  - {name: region, lane: beta, headers: {X-Region: eu}, cookies: {plan: "*"}}
  - {name: half, lane: beta, percent: 50}
`
		b := load(t, "graylane-mark")
		sequential, err := newHandler(b, "graylane-mark", yamlMap(t, config), nextHandler)
		if err != nil {
			t.Fatal(err)
		}
		concurrent, err := newHandler(b, "graylane-mark", yamlMap(t, config), nextHandler)
		if err != nil {
			t.Fatal(err)
		}
		testConcurrentMark(t, sequential, concurrent)
	})

	t.Run("concurrent lane requests", func(t *testing.T) {
		h, err := newHandler(load(t, "graylane-dispatch"), "graylane-dispatch", yamlMap(t, `
lanes:
  scheduled: {servers: [{url: "`+canary.URL+`", weight: 3}, {url: "`+beta.URL+`", weight: 1}]}
  long: {servers: [{url: "`+canary.URL+`", weight: 1000}, {url: "`+beta.URL+`", weight: 999}]}
  failing: {servers: [{url: "`+deadURL(t)+`"}, {url: "`+beta.URL+`"}]}
  sticky: {servers: [{url: "`+canary.URL+`"}, {url: "`+beta.URL+`"}], sticky: {cookie: {name: srv}}}
`), nextHandler)
		if err != nil {
			t.Fatal(err)
		}
		testConcurrentLanes(t, h)
	})

	t.Run("New starts no goroutine", func(t *testing.T) {
		configs := map[string]map[string]any{
			"graylane-mark":     yamlMap(t, `{identity: {header: X-User-Id}, rules: [{name: a, lane: canary, users: ["1"]}, {name: b, lane: beta, percent: 5}]}`),
			"graylane-dispatch": yamlMap(t, `{lanes: {canary: {servers: [{url: "`+canary.URL+`"}, {url: "`+beta.URL+`"}]}}}`),
			"graylane":          yamlMap(t, `{mark: {rules: [{name: a, lane: canary, path: {prefix: /}}]}, dispatch: {lanes: {canary: {servers: [{url: "`+canary.URL+`"}]}}}}`),
		}
		for alias, config := range configs {
			b := load(t, alias)
			_, _ = newHandler(b, alias, config, nextHandler) // warm up package-level state
			before := runtime.NumGoroutine()
			for i := 0; i < 100; i++ { // 100 configuration reloads
				if _, err := newHandler(b, alias, config, nextHandler); err != nil {
					t.Fatal(err)
				}
			}
			if after := runtime.NumGoroutine(); after > before+2 {
				t.Errorf("%s: %d goroutines after 100 calls of New, %d before", alias, after, before)
			}
		}
	})

	t.Run("mark cases", func(t *testing.T) {
		runCases(t, load(t, "graylane-mark"), "graylane-mark", markCases(), nil)
	})
	t.Run("dispatch cases", func(t *testing.T) {
		runCases(t, load(t, "graylane-dispatch"), "graylane-dispatch", dispatchCases(), strings.NewReplacer(
			"{{canary}}", canary.URL, "{{beta}}", beta.URL, "{{dead}}", deadURL(t)))
	})
	t.Run("facade cases", func(t *testing.T) {
		runCases(t, load(t, "graylane"), "graylane", facadeCases(), strings.NewReplacer("{{canary}}", canary.URL))
	})
}

// testConcurrent sends requests from 8 goroutines through an interpreted handler: users "1"
// must reach canary, the others beta or next by their percentage bucket, every time.
func testConcurrent(t *testing.T, h http.Handler) {
	concurrently(t, func(g int) string {
		for i := 0; i < 100; i++ {
			id := strconv.Itoa(g*1000 + i%7)
			if i%3 == 0 {
				id = "1"
			}
			want := "next lane="
			switch {
			case id == "1":
				want = "canary lane=canary"
			case bucket("half", id) < 5000:
				want = "beta lane=beta"
			}
			rec := serve(h, request{headers: user(id)})
			if got := rec.Body.String(); !strings.HasPrefix(got, want) {
				return fmt.Sprintf("user %s: got %q, want %q", id, got, want)
			}
		}
		return ""
	})
}

// concurrently runs work(g) in 8 goroutines, g = 0 to 7, and reports as test errors the messages
// they return ("" when all went well; a goroutine stops at its first problem).
func concurrently(t *testing.T, work func(g int) string) {
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			if msg := work(g); msg != "" {
				errs <- msg
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// markRequest returns the i-th request of testConcurrentMark: identities from the header, the
// cookie, the query or none (an anonymous visitor, who gets a sticky cookie), 40 app versions (more
// than one goroutine fills the version cache with each), paths, methods, headers and cookies.
func markRequest(i int) request {
	r := request{headers: map[string]string{"X-App-Version": fmt.Sprintf("%d.%d.0", 1+i%4, i%10)}}
	id := strconv.Itoa(i % 13)
	switch i % 4 {
	case 0:
		r.headers["X-User-Id"] = id
	case 1:
		r.headers["Cookie"] = "plan=a; uid=" + id
	case 2:
		r.target = "/?uid=" + id
	}
	if i%5 == 0 {
		r.method, r.target = http.MethodPost, "/api/v2/orders"
	}
	if i%7 == 0 {
		r.headers["X-Region"] = "eu"
	}
	return r
}

// testConcurrentMark sends the requests of markRequest through mark from 8 goroutines, to
// concurrent, and one after the other, to sequential (another instance of the same
// configuration): each request must get the same lane and rule from both, except that an anonymous
// one that reaches the percentage rule gets a sticky cookie with a random ID. Under the race detector (make race), this checks the
// interpreted version cache, field slots, regexp and cookie issuing for data races.
func testConcurrentMark(t *testing.T, sequential, concurrent http.Handler) {
	const n = 480
	want := make([]string, n)
	for i := 0; i < n; i++ {
		rec := serve(sequential, markRequest(i))
		want[i] = rec.Body.String() + " rule=" + rec.Header().Get("X-Gray-Rule")
	}
	concurrently(t, func(g int) string {
		for i := g; i < n; i += 8 {
			rec := serve(concurrent, markRequest(i))
			got := rec.Body.String() + " rule=" + rec.Header().Get("X-Gray-Rule")
			// An anonymous visitor's percentage rides on the random ID of a new sticky cookie.
			random := i%4 == 3 && (strings.HasSuffix(want[i], " rule=half") || strings.HasSuffix(want[i], " rule="))
			if random && rec.Header().Get("Set-Cookie") == "" || !random && got != want[i] {
				return fmt.Sprintf("request %d %+v: %q, Set-Cookie %q, want %q", i, markRequest(i), got, rec.Header().Get("Set-Cookie"), want[i])
			}
		}
		return ""
	})
}

// testConcurrentLanes sends requests from 8 goroutines through an interpreted dispatch with the
// lanes of TestYaegiLoader's "concurrent lane requests": a lane whose round-robin period is
// precomputed (3:1, taken by an atomic counter), one whose period is too long for that (1000:999,
// picked under the balancer's lock), one whose first server refuses connections (health records,
// retries) and a sticky one (its clients bring no cookie, so each gets one). Every request must be
// answered by a server of its lane, and the 3:1 lane, which gets a whole number of periods, must
// split exactly. Under the race detector (make race), this checks
// the interpreted balancer and health table for data races.
func testConcurrentLanes(t *testing.T, h http.Handler) {
	lanes := []string{"scheduled", "long", "failing", "sticky"}
	var mu sync.Mutex
	served := map[string]int{}
	concurrently(t, func(g int) string {
		for i := 0; i < 60; i++ {
			lane := lanes[(g+i)%len(lanes)]
			rec := serve(h, request{headers: map[string]string{"X-Gray-Lane": lane}})
			server, _, _ := strings.Cut(rec.Body.String(), " ")
			ok := rec.Code == http.StatusOK && (server == "canary" || server == "beta") &&
				(lane != "failing" || server == "beta") &&
				(lane != "sticky" || strings.HasPrefix(rec.Header().Get("Set-Cookie"), "srv="))
			if !ok {
				return fmt.Sprintf("lane %s: status %d, body %q", lane, rec.Code, rec.Body.String())
			}
			mu.Lock()
			served[lane+" "+server]++
			mu.Unlock()
		}
		return ""
	})
	if got := [2]int{served["scheduled canary"], served["scheduled beta"]}; got != [2]int{90, 30} {
		t.Errorf("lane scheduled (weights 3:1): canary %d, beta %d, want 90 and 30", got[0], got[1])
	}
	if served["long canary"] == 0 || served["long beta"] == 0 {
		t.Errorf("lane long (weights 1000:999): canary %d, beta %d, want both", served["long canary"], served["long beta"])
	}
}

// pluginCase is one configuration run through an interpreted plugin.
type pluginCase struct {
	name   string
	config string // YAML, as under http.middlewares.<name>.plugin.<alias>
	// wantErr lists substrings the error of Build or New must contain; empty means no error.
	wantErr  []string
	requests []request
}

func runCases(t *testing.T, builder *plugins.Builder, alias string, cases []pluginCase, vars *strings.Replacer) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := c.config
			if vars != nil {
				text = vars.Replace(text)
			}
			h, err := newHandler(builder, alias, yamlMap(t, text), nextHandler)
			if len(c.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one naming %q", c.wantErr)
				}
				for _, want := range c.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for i, r := range c.requests {
				check(t, h, i, r)
			}
		})
	}
}

func user(id string) map[string]string { return map[string]string{"X-User-Id": id} }

func lane(name string) map[string]string { return map[string]string{"X-Gray-Lane": name} }

// wantPercent is the answer expected from a percentage rule of lane canary.
func wantPercent(salt, key string, below uint64) string {
	if bucket(salt, key) < below {
		return "next lane=canary"
	}
	return "next lane="
}

func markCases() []pluginCase {
	cases := []pluginCase{
		{
			name: "users and default lane",
			config: `
identity: {header: X-User-Id}
defaultLane: stable
rules:
  - {name: testers, lane: canary, users: ["1001", "1002"]}`,
			requests: []request{
				{headers: user("1002"), want: "next lane=canary"},
				{headers: user("1003"), want: "next lane=stable"},
				{want: "next lane=stable"},
			},
		},
		{
			name: "users as a comma string (labels style)",
			config: `
identity: {header: X-User-Id}
rules:
  - {name: testers, lane: canary, users: "1001,1002"}`,
			requests: []request{
				{headers: user("1002"), want: "next lane=canary"},
				{headers: user("100"), want: "next lane="},
			},
		},
		{
			name: "identity order header, cookie, query",
			config: `
identity: {header: X-User-Id, cookie: uid, query: uid}
rules:
  - {name: testers, lane: canary, users: ["7"]}`,
			requests: []request{
				{headers: map[string]string{"Cookie": "uid=7"}, want: "next lane=canary"},
				{target: "/?uid=7", want: "next lane=canary"},
				{target: "/?uid=7", headers: map[string]string{"X-User-Id": "8"}, want: "next lane="},
				{target: "/?uid=8", headers: map[string]string{"Cookie": "uid=7"}, want: "next lane=canary"},
			},
		},
		{
			name: "several cookies in one header",
			config: `
identity: {cookie: uid}
rules:
  - {name: testers, lane: canary, users: ["7"]}
  - {name: flagged, lane: beta, cookies: {beta: "1"}}`,
			requests: []request{
				{headers: map[string]string{"Cookie": "a=1; uid=7; b=2"}, want: "next lane=canary"},
				{headers: map[string]string{"Cookie": "a=1; b=2; uid=7"}, want: "next lane=canary"},
				{headers: map[string]string{"Cookie": "a=1; b=2"}, want: "next lane="},
				{headers: map[string]string{"Cookie": "a=1;b=2;beta=1"}, want: "next lane=beta"},
				{headers: map[string]string{"Cookie": "uid=8; beta=1; c"}, want: "next lane=beta"},
				{headers: map[string]string{"Cookie": ";;; ; =;uid="}, want: "next lane="},
			},
		},
		{
			name: "jwt claim, and a garbage token does not panic",
			config: `
identity: {jwtClaim: sub}
rules:
  - {name: testers, lane: canary, users: ["alice"]}`,
			requests: []request{
				// {"alg":"none"}.{"sub":"alice"}.
				{headers: map[string]string{"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."}, want: "next lane=canary"},
				{headers: map[string]string{"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ."}, want: "next lane="},
				{headers: map[string]string{"Authorization": "Bearer !!!.@@@.###"}, want: "next lane="},
				{headers: map[string]string{"Authorization": "Bearer"}, want: "next lane="},
			},
		},
		{
			name: "spoofed lane header is stripped",
			config: `
identity: {header: X-User-Id}
rules:
  - {name: testers, lane: canary, users: ["1001"]}`,
			requests: []request{
				{headers: map[string]string{"X-Gray-Lane": "canary"}, want: "next lane="},
				{headers: map[string]string{"X-Gray-Lane": "canary", "X-User-Id": "2"}, want: "next lane="},
			},
		},
		{
			name: "incoming keep trusts the header and skips the rules",
			config: `
incoming: keep
identity: {header: X-User-Id}
rules:
  - {name: testers, lane: canary, users: ["1001"]}`,
			requests: []request{
				{headers: map[string]string{"X-Gray-Lane": "beta", "X-User-Id": "1001"}, want: "next lane=beta"},
				{headers: user("1001"), want: "next lane=canary"},
			},
		},
		{
			name: "incoming trustedIPs",
			config: `
incoming: trustedIPs
trustedIPs: [10.0.0.0/8]
rules:
  - {name: all, lane: canary, path: {prefix: /}}`,
			requests: []request{
				{remote: "10.1.2.3:4000", headers: lane("beta"), want: "next lane=beta"},
				{remote: "192.0.2.7:4000", headers: lane("beta"), want: "next lane=canary"},
			},
		},
		{
			name: "custom header name",
			config: `
header: X-Lane
rules:
  - {name: all, lane: canary, path: {prefix: /}}`,
			requests: []request{{want: "next lane="}},
		},
		{
			name: "path matchers",
			config: `
rules:
  - {name: exact, lane: exact, path: {exact: /a}}
  - {name: prefix, lane: prefix, path: {prefix: /beta}}
  - {name: contains, lane: contains, path: {contains: [preview, draft]}}
  - {name: regex, lane: regex, path: {regex: "^/v[0-9]+/new$"}}`,
			requests: []request{
				{target: "/a", want: "next lane=exact"},
				{target: "/a/b", want: "next lane="},
				{target: "/beta/x", want: "next lane=prefix"},
				{target: "/x/draft/y", want: "next lane=contains"},
				{target: "/v2/new", want: "next lane=regex"},
				{target: "/v2/new/x", want: "next lane="},
			},
		},
		{
			name: "headers condition alone",
			config: `
rules:
  - {name: region, lane: canary, headers: {X-Region: cn-east}}
  - {name: any-tenant, lane: beta, headers: {x-tenant: "*"}}`,
			requests: []request{
				{headers: map[string]string{"X-Region": "cn-east"}, want: "next lane=canary"},
				{headers: map[string]string{"X-Region": "cn-west"}, want: "next lane="},
				{headers: map[string]string{"X-Tenant": "acme"}, want: "next lane=beta"},
			},
		},
		{
			name: "methods, headers, cookies, query, sourceIPs are ANDed",
			config: `
rules:
  - name: region
    lane: canary
    methods: [GET]
    headers: {X-Region: cn-east}
    cookies: {beta: "1"}
    query: {preview: "*"}
    sourceIPs: [192.168.0.0/16]`,
			requests: []request{
				{target: "/?preview=x", remote: "192.168.1.1:1", headers: map[string]string{"X-Region": "cn-east", "Cookie": "beta=1"}, want: "next lane=canary"},
				{method: "POST", target: "/?preview=x", remote: "192.168.1.1:1", headers: map[string]string{"X-Region": "cn-east", "Cookie": "beta=1"}, want: "next lane="},
				{target: "/?preview=x", remote: "10.0.0.1:1", headers: map[string]string{"X-Region": "cn-east", "Cookie": "beta=1"}, want: "next lane="},
				{target: "/", remote: "192.168.1.1:1", headers: map[string]string{"X-Region": "cn-east", "Cookie": "beta=1"}, want: "next lane="},
				{target: "/?preview=x", remote: "192.168.1.1:1", headers: map[string]string{"X-Region": "cn-west", "Cookie": "beta=1"}, want: "next lane="},
				{target: "/?preview=x", remote: "192.168.1.1:1", headers: map[string]string{"X-Region": "cn-east", "Cookie": "beta=2"}, want: "next lane="},
			},
		},
		{
			name: "versions",
			config: `
version: {header: X-App-Version, query: appVersion}
rules:
  - {name: new-app, lane: canary, versions: ">=2.3.0, <3.0.0 || 3.1.x"}`,
			requests: []request{
				{headers: map[string]string{"X-App-Version": "2.3"}, want: "next lane=canary"},
				{headers: map[string]string{"X-App-Version": "v2.9.9"}, want: "next lane=canary"},
				{headers: map[string]string{"X-App-Version": "3.0.0"}, want: "next lane="},
				{headers: map[string]string{"X-App-Version": "3.1.4"}, want: "next lane=canary"},
				{headers: map[string]string{"X-App-Version": "2.3.0-rc.1"}, want: "next lane="},
				{target: "/?appVersion=2.5.0", want: "next lane=canary"},
				{headers: map[string]string{"X-App-Version": "two"}, want: "next lane="},
				{want: "next lane="},
			},
		},
		{
			name: "rule header names the matched rule",
			config: `
ruleHeader: X-Gray-Rule
identity: {header: X-User-Id}
rules:
  - {name: testers, lane: canary, users: ["1"]}`,
			requests: []request{
				{headers: user("1"), want: "next lane=canary", wantHeader: map[string]string{"X-Gray-Rule": "testers"}},
			},
		},
		{
			name: "lane names are lower-cased",
			config: `
rules:
  - {name: all, lane: Canary, path: {prefix: /}}`,
			requests: []request{{want: "next lane=canary"}},
		},
		{
			name: "time window and ramp",
			config: `
rules:
  - {name: over, lane: over, until: "2001-01-01T00:00:00Z", path: {prefix: /}}
  - {name: future, lane: future, from: "2999-01-01T00:00:00Z", path: {prefix: /}}
  - name: ramped
    lane: ramped
    ramp:
      - {at: "2001-01-01T00:00:00Z", percent: 0}
      - {at: "2002-01-01T00:00:00Z", percent: 100}
      - {at: "2999-01-01T00:00:00Z", percent: 0}`,
			requests: []request{{headers: user("1"), want: "next lane=ramped"}},
		},
		{
			name: "percent 100 with anonymous cookie issues the sticky cookie",
			config: `
rules:
  - {name: all, lane: canary, percent: 100}`,
			requests: []request{{want: "next lane=canary", wantHeader: map[string]string{"Set-Cookie": "*"}}},
		},
		{
			name: "percent with anonymous none never matches without identity",
			config: `
anonymous: none
identity: {header: X-User-Id}
rules:
  - {name: all, lane: canary, percent: 100}`,
			requests: []request{{want: "next lane="}, {headers: user("x"), want: "next lane=canary"}},
		},
		{
			name: "percent given as a string (weakly typed)",
			config: `
identity: {header: X-User-Id}
rules:
  - {name: all, lane: canary, percent: "100"}`,
			requests: []request{{headers: user("x"), want: "next lane=canary"}},
		},
	}

	// The percentage bucket follows the documented formula, for identities and for the
	// anonymous sticky cookie.
	var byUser, byCookie []request
	for i := 0; i < 40; i++ {
		// Any identity works; an anonymous ID has the form mark issues: 32 lower-case hex digits.
		key := fmt.Sprintf("user-%d", i)
		id := fmt.Sprintf("%x", sha256.Sum256([]byte(key)))[:32]
		byUser = append(byUser, request{headers: user(key), want: wantPercent("checkout-v2", key, 3750)})
		byCookie = append(byCookie, request{headers: map[string]string{"Cookie": "graylane_id=" + id}, want: wantPercent("checkout-v2", id, 3750)})
	}
	cases = append(cases,
		pluginCase{
			name: "percent bucket formula (identity)",
			config: `
identity: {header: X-User-Id}
rules:
  - {name: ten, lane: canary, percent: 37.5, salt: checkout-v2}`,
			requests: byUser,
		},
		pluginCase{
			name: "percent bucket formula (sticky cookie), salt defaults to the name",
			config: `
rules:
  - {name: checkout-v2, lane: canary, percent: 37.5}`,
			requests: byCookie,
		},
	)

	// Bad configurations: one error naming the field.
	for _, bad := range []struct{ name, config, field string }{
		{"bad lane", `rules: [{name: a, lane: "Bad Lane!", path: {prefix: /}}]`, "rules[0].lane"},
		{"users without identity source", `rules: [{name: a, lane: x, users: ["1"]}]`, "rules[0].users"},
		{"bad version", `rules: [{name: a, lane: x}, {name: b, lane: x, versions: ">=2.x.y"}]`, "rules[1].versions"},
		{"bad regex", `rules: [{name: a, lane: x, path: {regex: "("}}]`, "rules[0].path"},
		{"two path matchers", `rules: [{name: a, lane: x, path: {prefix: /a, exact: /b}}]`, "rules[0].path"},
		{"bad percent", `rules: [{name: a, lane: x, percent: 150}]`, "rules[0].percent"},
		{"bad time", `rules: [{name: a, lane: x, from: "tomorrow"}]`, "rules[0].from"},
		{"bad ramp", `rules: [{name: a, lane: x, ramp: [{at: "nope", percent: 1}]}]`, "rules[0].ramp[0]"},
		{"bad source CIDR", `rules: [{name: a, lane: x, sourceIPs: ["10.0.0.0/99"]}]`, "rules[0].sourceIPs"},
		{"bad incoming", `incoming: sometimes`, "incoming"},
		{"bad trustedIPs", `{incoming: trustedIPs, trustedIPs: ["nope"]}`, "trustedIPs"},
		{"bad anonymous", `anonymous: everyone`, "anonymous"},
		{"bad default lane", `defaultLane: "no way"`, "defaultLane"},
		{"bad maxAge", `stickyCookie: {maxAge: forever}`, "stickyCookie.maxAge"},
		{"bad sameSite", `stickyCookie: {sameSite: Sometimes}`, "stickyCookie.sameSite"},
	} {
		cases = append(cases, pluginCase{name: "error: " + bad.name, config: bad.config, wantErr: []string{bad.field}})
	}
	return cases
}

func dispatchCases() []pluginCase {
	cases := []pluginCase{
		{
			name: "lane to its server, others to next, lane header kept, X-Forwarded-For set",
			config: `
lanes:
  canary: {servers: [{url: "{{canary}}"}]}`,
			requests: []request{
				{headers: lane("canary"), want: "canary lane=canary host=gray.test xff=192.0.2.1"},
				{headers: lane("CANARY"), want: "canary "},
				{headers: lane("other"), want: "next lane=other"},
				{want: "next lane="},
			},
		},
		{
			name: "unknownLane reject",
			config: `
unknownLane: reject
lanes:
  canary: {servers: [{url: "{{canary}}"}]}`,
			requests: []request{
				{headers: lane("canary"), want: "canary lane=canary"},
				{headers: lane("other"), wantStatus: http.StatusBadRequest},
			},
		},
		{
			name: "smooth weighted round robin 3:1",
			config: `
lanes:
  canary: {servers: [{url: "{{canary}}", weight: 3}, {url: "{{beta}}", weight: 1}]}`,
			requests: []request{
				{headers: lane("canary"), want: "canary"},
				{headers: lane("canary"), want: "canary"},
				{headers: lane("canary"), want: "beta"},
				{headers: lane("canary"), want: "canary"},
			},
		},
		{
			name: "weight 0 drains",
			config: `
lanes:
  canary: {servers: [{url: "{{canary}}", weight: 0}, {url: "{{beta}}"}]}`,
			requests: []request{
				{headers: lane("canary"), want: "beta"},
				{headers: lane("canary"), want: "beta"},
			},
		},
		{
			name: "passHostHeader false sends the server's host",
			config: `
lanes:
  canary: {servers: [{url: "{{canary}}"}], passHostHeader: false}`,
			requests: []request{{headers: lane("canary"), want: "canary lane=canary host=127.0.0.1:"}},
		},
		{
			name: "dead server: GET retried on the next server",
			config: `
health: {maxFails: 0}
lanes:
  canary: {servers: [{url: "{{dead}}"}, {url: "{{canary}}"}]}`,
			requests: []request{
				{headers: lane("canary"), want: "canary lane=canary"},
				{headers: lane("canary"), want: "canary lane=canary"},
			},
		},
		{
			name: "dead lane falls back to next",
			config: `
lanes:
  canary: {servers: [{url: "{{dead}}"}]}`,
			requests: []request{{headers: lane("canary"), want: "next lane=canary"}},
		},
		{
			name: "dead lane falls back to another lane",
			config: `
lanes:
  canary: {servers: [{url: "{{dead}}"}], fallback: beta}
  beta: {servers: [{url: "{{beta}}"}]}`,
			requests: []request{{headers: lane("canary"), want: "beta "}},
		},
		{
			name: "dead lane with fallback none answers 502",
			config: `
lanes:
  canary: {servers: [{url: "{{dead}}"}], fallback: none}`,
			requests: []request{{headers: lane("canary"), wantStatus: http.StatusBadGateway}},
		},
		{
			name: "servedByHeader",
			config: `
servedByHeader: X-Gray-Upstream
lanes:
  canary: {servers: [{url: "{{canary}}"}]}`,
			requests: []request{{headers: lane("canary"), want: "canary", wantHeader: map[string]string{"X-Gray-Upstream": "*"}}},
		},
		{
			name: "custom header",
			config: `
header: X-Lane
lanes:
  canary: {servers: [{url: "{{canary}}"}]}`,
			requests: []request{
				{headers: map[string]string{"X-Lane": "canary"}, want: "canary"},
				{headers: lane("canary"), want: "next"},
			},
		},
		{
			name: "values given as strings (weakly typed)",
			config: `
health: {maxFails: "2"}
lanes:
  canary: {servers: [{url: "{{canary}}", weight: "5"}], passHostHeader: "true"}`,
			requests: []request{{headers: lane("canary"), want: "canary"}},
		},
	}
	for _, bad := range []struct {
		name, config string
		fields       []string
	}{
		{"bad url", `lanes: {canary: {servers: [{url: "ht tp://x"}]}}`, []string{"canary", "servers[0].url"}},
		{"url without host", `lanes: {canary: {servers: [{url: "http://"}]}}`, []string{"canary", "servers[0].url"}},
		{"bad weight", `lanes: {canary: {servers: [{url: "http://127.0.0.1:1", weight: 1001}]}}`, []string{"canary", "servers[0].weight"}},
		{"unknown fallback", `lanes: {canary: {servers: [{url: "http://127.0.0.1:1"}], fallback: nowhere}}`, []string{"canary", "fallback", "nowhere"}},
		{"fallback cycle", `lanes: {a: {servers: [{url: "http://127.0.0.1:1"}], fallback: b}, b: {servers: [{url: "http://127.0.0.1:2"}], fallback: a}}`, []string{"fallback"}},
		{"bad lane name", `lanes: {"no way": {servers: [{url: "http://127.0.0.1:1"}]}}`, []string{"lanes"}},
		{"bad unknownLane", `unknownLane: maybe`, []string{"unknownLane"}},
		{"bad dial timeout", `timeouts: {dial: fast}`, []string{"timeouts.dial", "fast"}},
		{"bad health window", `health: {window: often}`, []string{"health.window"}},
	} {
		cases = append(cases, pluginCase{name: "error: " + bad.name, config: bad.config, wantErr: bad.fields})
	}
	return cases
}

func facadeCases() []pluginCase {
	return []pluginCase{
		{
			name: "mark then dispatch",
			config: `
mark:
  identity: {header: X-User-Id}
  rules: [{name: testers, lane: canary, users: ["1"]}]
dispatch:
  lanes: {canary: {servers: [{url: "{{canary}}"}]}}`,
			requests: []request{
				{headers: user("1"), want: "canary lane=canary"},
				{headers: map[string]string{"X-User-Id": "2", "X-Gray-Lane": "canary"}, want: "next lane="},
			},
		},
		{
			name:     "mark only, defaults apply to the section",
			config:   `mark: {rules: [{name: all, lane: canary, path: {prefix: /}}]}`,
			requests: []request{{headers: lane("beta"), want: "next lane=canary"}},
		},
		{
			name:     "dispatch only",
			config:   `dispatch: {lanes: {canary: {servers: [{url: "{{canary}}"}]}}}`,
			requests: []request{{headers: lane("canary"), want: "canary lane=canary"}, {want: "next lane="}},
		},
		{name: "error: empty", config: `{}`, wantErr: []string{"mark", "dispatch"}},
		{name: "error: mark field", config: `mark: {rules: [{name: a, lane: "Bad Lane!", path: {prefix: /}}]}`, wantErr: []string{"mark.rules[0].lane"}},
		{name: "error: dispatch field", config: `dispatch: {unknownLane: maybe}`, wantErr: []string{"dispatch.unknownLane"}},
	}
}
