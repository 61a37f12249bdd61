package harness_test

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/graylane/graylane/e2e/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if left := append(harness.LeftoverChildren(), harness.LeftoverProcesses()...); len(left) > 0 {
		println("leftover child processes:", strings.Join(left, "; "))
		code = 1
	}
	os.Exit(code)
}

func TestBackend(t *testing.T) {
	b := harness.StartBackend(t, "alpha")

	status, body := harness.Get(t, b.URL+"/some/path?x=1", map[string]string{"X-Test": "yes", "Host": "example.test"})
	obj, ok := body.(map[string]any)
	if status != http.StatusOK || !ok {
		t.Fatalf("GET: %d %v", status, body)
	}
	headers, _ := obj["headers"].(map[string]any)
	if obj["backend"] != "alpha" || obj["path"] != "/some/path" || obj["host"] != "example.test" || headers["X-Test"] != "yes" {
		t.Errorf("GET answer: %v", obj)
	}

	if r := harness.Do(t, http.MethodGet, b.URL+"/status?code=503", nil, nil); r.Status != 503 || r.Backend() != "alpha" {
		t.Errorf("/status: %d %s", r.Status, r.Body)
	}
	if r := harness.Do(t, http.MethodPost, b.URL+"/upload", nil, make([]byte, 100000)); r.JSON["bytes"] != float64(100000) {
		t.Errorf("/upload: %s", r.Body)
	}

	// SSE: events arrive one by one, not all at the end (the gap is long, so that a loaded
	// machine's stall is not taken for buffering).
	resp, err := http.Get(b.URL + "/sse?n=3&gap=3s")
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	start := time.Now()
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "id: 0") || time.Since(start) > 2*time.Second {
		t.Errorf("first event %q after %s (%v)", line, time.Since(start), err)
	}
	resp.Body.Close()

	// WebSocket echo.
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(b.URL, "http")+"/ws", nil) //nolint:bodyclose // the 101 has no body; ws.Close closes the connection
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Errorf("ws echo: %q %v", msg, err)
	}
	ws.Close()

	// /hang returns when the client gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/hang", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Error("/hang answered")
	}

	b.Kill()
	if _, err := harness.TryDo(http.MethodGet, b.URL, nil, nil); err == nil {
		t.Error("killed backend still answers")
	}
}

func TestMergeYAML(t *testing.T) {
	static := harness.StaticConfig("/w", 1, 2, harness.TraefikOptions{})
	err := harness.MergeYAML(static, "providers:\n  kubernetesCRD: {endpoint: x}\nexperimental:\n  abortOnPluginFailure: true\nlog: {level: DEBUG}\n")
	if err != nil {
		t.Fatal(err)
	}
	providers := static["providers"].(map[string]any)
	exp := static["experimental"].(map[string]any)
	if providers["file"] == nil || providers["kubernetesCRD"] == nil || exp["localPlugins"] == nil || exp["abortOnPluginFailure"] != true {
		t.Errorf("merged: %v", static)
	}
	if static["log"].(map[string]any)["level"] != "DEBUG" {
		t.Errorf("log: %v", static["log"])
	}
}

func TestRepoRoot(t *testing.T) {
	for _, f := range []string{"go.mod", "mark", "dispatch", "e2e/go.mod"} {
		if _, err := os.Stat(filepath.Join(harness.RepoRoot(), f)); err != nil {
			t.Errorf("RepoRoot %s: %v", harness.RepoRoot(), err)
		}
	}
}

// TestTraefikWithoutPlugins starts Traefik with no local plugin at all, as the benchmark's
// plugin-free variants do: the static configuration must then have no localPlugins section.
func TestTraefikWithoutPlugins(t *testing.T) {
	backend := harness.StartBackend(t, "plain")
	tr := harness.StartTraefik(t, harness.TraefikOptions{
		LocalPlugins: map[string]string{},
		Dynamic: `
http:
  routers:
    plain: {rule: "PathPrefix(` + "`/`" + `)", entryPoints: [web], service: plain}
  services:
    plain:
      loadBalancer:
        servers: [{url: "` + backend.URL + `"}]
`,
	})
	tr.WaitRouter(t, "plain", 30*time.Second)
	if got := harness.Do(t, "GET", tr.URL+"/", nil, nil).Backend(); got != "plain" {
		t.Fatalf("answered by %q", got)
	}
}
