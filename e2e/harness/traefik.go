package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TraefikOptions configures StartTraefik.
type TraefikOptions struct {
	// Dynamic is the initial dynamic configuration (YAML). It is written to dynamic/dynamic.yml
	// before Traefik starts; the file provider watches the dynamic/ directory. Empty: no file.
	Dynamic string
	// ExtraStatic is YAML deep-merged into the generated static configuration: mappings are
	// merged key by key (recursively), any other value (scalar, list) replaces the generated
	// one. So `providers: {kubernetesCRD: {...}}` adds a provider next to the file provider,
	// and `experimental: {abortOnPluginFailure: true}` keeps the local plugins.
	ExtraStatic string
	// LocalPlugins maps plugin alias → module name for experimental.localPlugins.
	// Nil means DefaultLocalPlugins(); an empty non-nil map declares none.
	LocalPlugins map[string]string
	// ExtraPluginSources maps module name → directory whose files are copied into
	// plugins-local/src/<module name> (for test-only plugins such as do-nothing middlewares).
	ExtraPluginSources map[string]string
	// LogLevel is Traefik's log level. Default INFO.
	LogLevel string
	// StartTimeout bounds the wait for /ping. Default 90s.
	StartTimeout time.Duration
}

// Traefik is a running Traefik process.
type Traefik struct {
	// URL is the web entry point, http://127.0.0.1:<port>.
	URL string
	// APIURL is the traefik entry point (API, dashboard, /ping, /metrics), http://127.0.0.1:<port>.
	APIURL string
	// Dir is the work directory: Traefik's cwd, holding traefik.yml, traefik.log,
	// plugins-local/ and dynamic/.
	Dir string
	// DynamicDir is the directory the file provider watches.
	DynamicDir string
	// LogFile is the file Traefik's stdout and stderr go to.
	LogFile string

	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

var (
	traefikOnce sync.Once
	traefikPath string
	traefikErr  error
)

// TraefikBinary returns the Traefik binary to test against (see FindTraefik) and fails the
// test when there is none. A first build takes 12-20 minutes: run such a `go test` with -timeout 40m.
// It skips the test when $GRAYLANE_SKIP_TRAEFIK is set: every test that runs a real Traefik
// goes through it (StartTraefik calls it first), so that switch needs no check of its own.
func TraefikBinary(tb testing.TB) string {
	tb.Helper()
	if os.Getenv("GRAYLANE_SKIP_TRAEFIK") != "" {
		tb.Skip("GRAYLANE_SKIP_TRAEFIK is set")
	}
	bin, err := FindTraefik()
	if err != nil {
		tb.Fatalf("harness: Traefik binary: %v", err)
	}
	return bin
}

// FindTraefik returns $GRAYLANE_TRAEFIK when set, else the binary scripts/build-traefik.sh
// builds (or reuses) for the version pinned in e2e/go.mod; the script checks the cache and
// takes a lock so that parallel callers build once. It runs once per process; its progress
// goes to os.Stderr.
func FindTraefik() (string, error) {
	traefikOnce.Do(func() {
		traefikPath, traefikErr = findTraefik()
	})
	return traefikPath, traefikErr
}

func findTraefik() (string, error) {
	if p := os.Getenv("GRAYLANE_TRAEFIK"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("GRAYLANE_TRAEFIK: %w", err)
		}
		return p, nil
	}
	path, err := RunScript("build-traefik.sh")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("scripts/build-traefik.sh printed %q: %w", path, err)
	}
	return path, nil
}

// RunScript runs one of the repository's build scripts (scripts/<name>) with its progress on
// os.Stderr and returns the last line it printed on stdout: the path of what it built.
func RunScript(name string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(RepoRoot(), "scripts", name))
	cmd.Dir = RepoRoot()
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/%s: %w", name, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// cacheDir is where the harness keeps built binaries, like scripts/build-traefik.sh.
func cacheDir() string {
	if d := os.Getenv("GRAYLANE_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "graylane")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "graylane")
	}
	return filepath.Join(os.TempDir(), "graylane-cache")
}

// StaticConfig returns the static configuration StartTraefik writes, before ExtraStatic is
// merged in, for a Traefik working in dir with the given entry point ports: entry points web
// and traefik on 127.0.0.1 (graceful shutdown 3s), ping, the insecure API and Prometheus
// metrics on traefik, the file provider watching <dir>/dynamic, the local plugins, the log
// level without colours, no access log, no version check and no usage statistics.
func StaticConfig(dir string, webPort, apiPort int, opts TraefikOptions) map[string]any {
	level := opts.LogLevel
	if level == "" {
		level = "INFO"
	}
	plugins := opts.LocalPlugins
	if plugins == nil {
		plugins = DefaultLocalPlugins()
	}
	// A short graceful shutdown, so stopping Traefik with a request still hanging takes seconds.
	lifeCycle := map[string]any{"lifeCycle": map[string]any{"graceTimeOut": "3s"}}
	local := map[string]any{}
	for alias, module := range plugins {
		local[alias] = map[string]any{"moduleName": module}
	}
	static := map[string]any{
		"global": map[string]any{"checkNewVersion": false, "sendAnonymousUsage": false},
		"entryPoints": map[string]any{
			"web":     map[string]any{"address": "127.0.0.1:" + strconv.Itoa(webPort), "transport": lifeCycle},
			"traefik": map[string]any{"address": "127.0.0.1:" + strconv.Itoa(apiPort), "transport": lifeCycle},
		},
		"ping":    map[string]any{"entryPoint": "traefik"},
		"api":     map[string]any{"insecure": true, "dashboard": false},
		"metrics": map[string]any{"prometheus": map[string]any{"entryPoint": "traefik"}},
		"providers": map[string]any{
			"file": map[string]any{"directory": filepath.Join(dir, "dynamic"), "watch": true},
		},
		"log": map[string]any{"level": level, "noColor": true},
	}
	if len(local) > 0 { // Traefik refuses an empty localPlugins section
		static["experimental"] = map[string]any{"localPlugins": local}
	}
	return static
}

// MergeYAML deep-merges the YAML mapping src into dst: mappings merge key by key, any other
// value of src replaces dst's.
func MergeYAML(dst map[string]any, src string) error {
	var extra map[string]any
	if err := yaml.Unmarshal([]byte(src), &extra); err != nil {
		return err
	}
	mergeMaps(dst, extra)
	return nil
}

func mergeMaps(dst, src map[string]any) {
	for k, v := range src {
		sm, sok := v.(map[string]any)
		dm, dok := dst[k].(map[string]any)
		if sok && dok {
			mergeMaps(dm, sm)
			continue
		}
		dst[k] = v
	}
}

// StartTraefik starts Traefik in a fresh work directory on free ports (see Launch) and
// registers a Cleanup that stops it and, when the test failed, logs the tail of Traefik's log.
// Like TraefikBinary, it skips the test when $GRAYLANE_SKIP_TRAEFIK is set.
func StartTraefik(tb testing.TB, opts TraefikOptions) *Traefik {
	tb.Helper()
	bin := TraefikBinary(tb)
	var t *Traefik
	var err error
	// FreePort releases its port before Traefik binds it: when a process running in parallel
	// took one of them in between, Traefik exits at once, and it is started again on new ports.
	for attempt := 0; attempt < 3; attempt++ {
		webPort, apiPort := FreePort(tb), FreePort(tb)
		for apiPort == webPort {
			apiPort = FreePort(tb)
		}
		t, err = Launch(bin, tb.TempDir(), webPort, apiPort, opts)
		if t == nil || err == nil || !strings.Contains(t.Log(), "address already in use") {
			break
		}
		t.Stop()
		tb.Logf("harness: a port of Traefik was taken, starting it again: %v", err)
	}
	if t != nil {
		tb.Cleanup(func() {
			t.Stop()
			if tb.Failed() {
				tb.Logf("traefik log (%s), last lines:\n%s", t.LogFile, tail(t.Log(), 60))
			}
		})
	}
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return t
}

// Launch starts the Traefik binary bin working in dir, with the plugin source installed there
// as local plugins (see InstallPlugins), the static configuration of StaticConfig (with
// opts.ExtraStatic merged in) and opts.Dynamic in the watched directory, and waits until /ping
// answers. When it returns a Traefik, the caller must Stop it, even with an error.
func Launch(bin, dir string, webPort, apiPort int, opts TraefikOptions) (*Traefik, error) {
	if _, err := installPlugins(dir, opts.ExtraPluginSources); err != nil {
		return nil, err
	}
	t := &Traefik{
		URL:        "http://127.0.0.1:" + strconv.Itoa(webPort),
		APIURL:     "http://127.0.0.1:" + strconv.Itoa(apiPort),
		Dir:        dir,
		DynamicDir: filepath.Join(dir, "dynamic"),
		LogFile:    filepath.Join(dir, "traefik.log"),
		done:       make(chan struct{}),
	}
	if err := os.MkdirAll(t.DynamicDir, 0o755); err != nil {
		return nil, err
	}
	if opts.Dynamic != "" {
		if err := t.WriteFile("dynamic.yml", opts.Dynamic); err != nil {
			return nil, err
		}
	}
	static := StaticConfig(dir, webPort, apiPort, opts)
	if opts.ExtraStatic != "" {
		if err := MergeYAML(static, opts.ExtraStatic); err != nil {
			return nil, fmt.Errorf("ExtraStatic: %w", err)
		}
	}
	staticYAML, err := yaml.Marshal(static)
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "traefik.yml")
	if err := os.WriteFile(configFile, staticYAML, 0o644); err != nil {
		return nil, err
	}

	logFile, err := os.Create(t.LogFile)
	if err != nil {
		return nil, err
	}
	t.cmd = exec.Command(bin, "--configFile="+configFile)
	t.cmd.Dir = dir
	t.cmd.Stdout = logFile
	t.cmd.Stderr = logFile
	t.cmd.SysProcAttr = childAttr()
	if err := t.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start traefik: %w", err)
	}
	track(t.cmd.Process.Pid, "traefik "+dir)
	go func() {
		_ = t.cmd.Wait()
		logFile.Close()
		close(t.done)
	}()

	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	if err := t.waitPing(timeout); err != nil {
		return t, fmt.Errorf("traefik did not start: %w\nstatic config:\n%s\nlog:\n%s", err, staticYAML, tail(t.Log(), 60))
	}
	return t, nil
}

func (t *Traefik) waitPing(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.APIURL+"/ping", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-t.done:
			return fmt.Errorf("traefik exited: %v", t.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("no answer from %s/ping within %s (last error: %v)", t.APIURL, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WriteDynamic replaces the dynamic configuration file (dynamic/dynamic.yml) atomically:
// it writes a temporary file outside the watched directory and renames it in place.
func (t *Traefik) WriteDynamic(tb testing.TB, yamlText string) {
	tb.Helper()
	t.WriteDynamicFile(tb, "dynamic.yml", yamlText)
}

// WriteDynamicFile is WriteDynamic for another file name in the watched directory, for
// tests that spread the configuration over several files.
func (t *Traefik) WriteDynamicFile(tb testing.TB, name, yamlText string) {
	tb.Helper()
	if err := t.WriteFile(name, yamlText); err != nil {
		tb.Fatalf("harness: write dynamic configuration: %v", err)
	}
}

// WriteFile writes a file of the watched directory atomically: it writes a temporary file
// outside that directory and renames it in place, so Traefik never reads half a file.
func (t *Traefik) WriteFile(name, yamlText string) error {
	tmp, err := os.CreateTemp(t.Dir, ".dynamic-*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(yamlText)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(t.DynamicDir, name))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// Log returns everything Traefik has logged so far.
func (t *Traefik) Log() string {
	data, _ := os.ReadFile(t.LogFile)
	return string(data)
}

// WaitLog waits until Traefik's log contains substr, and fails the test after timeout.
func (t *Traefik) WaitLog(tb testing.TB, substr string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(t.Log(), substr) {
		if time.Now().After(deadline) {
			tb.Fatalf("harness: traefik log has no %q after %s; last lines:\n%s", substr, timeout, tail(t.Log(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Router is the part of Traefik's /api/http/routers/<name> answer the tests look at.
type Router struct {
	Name        string   `json:"name"`
	Provider    string   `json:"provider"`
	Status      string   `json:"status"`
	Service     string   `json:"service"`
	Middlewares []string `json:"middlewares"`
	Error       []string `json:"error"`
}

// GetRouter asks Traefik's API for a router. name without a provider suffix gets "@file".
// ok is false when the router does not exist (yet).
func (t *Traefik) GetRouter(tb testing.TB, name string) (r Router, ok bool) {
	tb.Helper()
	if !strings.Contains(name, "@") {
		name += "@file"
	}
	resp, err := Client.Get(t.APIURL + "/api/http/routers/" + name)
	if err != nil {
		tb.Fatalf("harness: traefik API: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return r, false
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("harness: traefik API %s: %s: %s", name, resp.Status, body)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		tb.Fatalf("harness: traefik API %s: %v", name, err)
	}
	return r, true
}

// WaitRouter polls the API until the router (name, "@file" added when there is no "@") exists
// with status "enabled", and fails the test after timeout.
func (t *Traefik) WaitRouter(tb testing.TB, name string, timeout time.Duration) {
	tb.Helper()
	t.WaitRouterStatus(tb, name, "enabled", timeout)
}

// WaitRouterStatus polls the API until the router has the status ("enabled", "disabled",
// "warning") and returns it; it fails the test after timeout.
func (t *Traefik) WaitRouterStatus(tb testing.TB, name, status string, timeout time.Duration) Router {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, ok := t.GetRouter(tb, name)
		if ok && r.Status == status {
			return r
		}
		if time.Now().After(deadline) {
			tb.Fatalf("harness: router %s not %s after %s (found %v: %+v); traefik log:\n%s", name, status, timeout, ok, r, tail(t.Log(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops Traefik: SIGTERM, then SIGKILL after 10 seconds. It is safe to call twice.
func (t *Traefik) Stop() {
	t.stopOnce.Do(func() {
		stopProcess(t.cmd.Process, t.done, 10*time.Second)
	})
}

// PID is the Traefik process's ID.
func (t *Traefik) PID() int {
	return t.cmd.Process.Pid
}

// Exited reports whether the Traefik process has ended.
func (t *Traefik) Exited() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func stopProcess(p *os.Process, done <-chan struct{}, grace time.Duration) {
	select {
	case <-done:
		return
	default:
	}
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = p.Kill()
	}
	select {
	case <-done:
	case <-time.After(grace):
		_ = p.Kill()
		<-done
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
