package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Backend is a running e2e/cmd/backend process.
type Backend struct {
	// Name is reported as "backend" in every JSON answer.
	Name string
	// URL is http://127.0.0.1:<port> (https:// when the backend serves TLS).
	URL string

	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

var (
	backendOnce sync.Once
	backendPath string
	backendErr  error
)

// started records the processes the harness started, for LeftoverProcesses.
var (
	startedMu sync.Mutex
	started   = map[int]string{}
)

func track(pid int, name string) {
	startedMu.Lock()
	started[pid] = name
	startedMu.Unlock()
}

// BackendBinary builds e2e/cmd/backend (once per process) into the cache directory and returns
// its path.
func BackendBinary(tb testing.TB) string {
	tb.Helper()
	backendOnce.Do(func() {
		backendPath, backendErr = buildBackend()
	})
	if backendErr != nil {
		tb.Fatalf("harness: build backend: %v", backendErr)
	}
	return backendPath
}

func buildBackend() (string, error) {
	dir := filepath.Join(cacheDir(), "e2e-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "backend")
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "./cmd/backend")
	cmd.Dir = filepath.Join(RepoRoot(), "e2e")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/backend: %v\n%s", err, msg)
	}
	// Rename is atomic: a backend another test process runs keeps its own inode.
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	return out, nil
}

// StartBackend starts e2e/cmd/backend as a separate process on a free loopback port, with the
// extra command-line flags given, and registers a Cleanup that stops it. See e2e/cmd/backend for
// what it answers.
func StartBackend(tb testing.TB, name string, flags ...string) *Backend {
	tb.Helper()
	b := &Backend{Name: name, done: make(chan struct{})}
	b.cmd = exec.Command(BackendBinary(tb), append([]string{"-name", name}, flags...)...)
	b.cmd.SysProcAttr = childAttr()
	stdin, err := b.cmd.StdinPipe() // closed when we die: the backend exits
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		tb.Fatalf("harness: start backend %s: %v", name, err)
	}
	track(b.cmd.Process.Pid, "backend "+name)
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	tb.Cleanup(func() {
		b.stop()
		stdin.Close()
	})

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() { // keep draining so the backend never blocks on stdout
		}
	}()
	select {
	case line, ok := <-lines:
		url, found := strings.CutPrefix(line, "listening on ")
		if !ok || !found {
			tb.Fatalf("harness: backend %s did not start (first line %q)", name, line)
		}
		b.URL = url
	case <-time.After(30 * time.Second):
		tb.Fatalf("harness: backend %s did not start within 30s", name)
	}
	return b
}

// Kill kills the backend with SIGKILL and waits for it to end, for fault tests.
func (b *Backend) Kill() {
	b.stopOnce.Do(func() {
		_ = b.cmd.Process.Kill()
		<-b.done
	})
}

func (b *Backend) stop() {
	b.stopOnce.Do(func() {
		stopProcess(b.cmd.Process, b.done, 5*time.Second)
	})
}

// DiesWithTest makes the kernel kill cmd's process when the test process dies (Linux), as it
// does for the Traefik and backend processes the harness starts.
func DiesWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = childAttr()
}
