// Command demo shows graylane in one minute: it starts the pinned Traefik with the mark and
// dispatch plugins and demo/dynamic.yml, three backends (stable, canary, beta), and a stream of
// synthetic users — testers, app versions, beta pages, identified and anonymous visitors — and
// draws where they land. Halfway it raises the canary share from 10 % to 50 % by rewriting the
// dynamic configuration, to show the hot reload moving traffic with no failed request.
// It stops by itself after -duration, or on Ctrl-C, and leaves no process behind.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// The demo listens on fixed loopback ports so that its URLs can be tried by hand while it
// runs (those of demo/dynamic.yml and the README); -free-ports takes free ones instead.
var (
	webPort = 8000
	apiPort = 8080
)

var backends = []struct {
	name string
	addr string
}{
	{"stable", "127.0.0.1:9101"},
	{"canary", "127.0.0.1:9102"},
	{"beta", "127.0.0.1:9103"},
}

func main() {
	duration := flag.Duration("duration", 40*time.Second, "how long the demo runs")
	workers := flag.Int("workers", 8, "concurrent synthetic clients")
	freePorts := flag.Bool("free-ports", false, "listen on free loopback ports rather than 8000, 8080 and 9101-9103 (for tests)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *freePorts {
		if err := takeFreePorts(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
	}
	if err := run(ctx, *duration, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// takeFreePorts replaces the fixed ports by free ones: Traefik's are probed (Traefik binds them
// itself), the backends get listeners on free ports at once (see listeners).
func takeFreePorts() error {
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	webPort, apiPort = ports[0], ports[1]
	for i := range backends {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		backends[i].addr = ln.Addr().String()
		listeners[backends[i].addr] = ln
	}
	return nil
}

// listeners holds the backends' listeners that takeFreePorts opened, by address.
var listeners = map[string]net.Listener{}

func run(ctx context.Context, duration time.Duration, workers int) error {
	bin, err := harness.FindTraefik()
	if err != nil {
		return err
	}
	for _, b := range backends {
		stopBackend, err := serveBackend(b.name, b.addr)
		if err != nil {
			return fmt.Errorf("backend %s on %s: %w", b.name, b.addr, err)
		}
		defer stopBackend()
	}

	dir, err := os.MkdirTemp("", "graylane-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "demo", "dynamic.yml"))
	if err != nil {
		return err
	}
	// demo/dynamic.yml names the backends by their fixed addresses.
	dynamic := string(file)
	for i, b := range backends {
		dynamic = strings.ReplaceAll(dynamic, fmt.Sprintf("127.0.0.1:%d", 9101+i), b.addr)
	}
	fmt.Println("starting Traefik with graylane (first start compiles nothing, Yaegi loads the plugins)…")
	traefik, err := harness.Launch(bin, dir, webPort, apiPort, harness.TraefikOptions{Dynamic: dynamic, LogLevel: "ERROR"})
	if traefik != nil {
		defer traefik.Stop()
	}
	if err != nil {
		return err
	}
	if err := waitRouter(ctx, traefik.APIURL+"/api/http/routers/shop@file", 60*time.Second); err != nil {
		return fmt.Errorf("%w; Traefik's log:\n%s", err, traefik.Log())
	}

	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	board := newBoard(traefik.URL)
	go board.load(ctx, workers)

	reloadAt := time.Now().Add(duration / 2)
	reloaded := false
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			board.draw(os.Stdout, true)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && board.failed() > 0 {
				return fmt.Errorf("%d requests failed", board.failed())
			}
			return nil
		case now := <-tick.C:
			if !reloaded && now.After(reloadAt) {
				raised := strings.Replace(dynamic, "percent: 10", "percent: 50", 1)
				if err := traefik.WriteFile("dynamic.yml", raised); err != nil {
					return err
				}
				board.phase("canary-share raised from 10 % to 50 % (dynamic file rewritten, hot reload)")
				reloaded = true
			}
			board.draw(os.Stdout, false)
		}
	}
}

// waitRouter polls Traefik's API until the router is enabled.
func waitRouter(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `"status":"enabled"`) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router not enabled after %s at %s", timeout, url)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serveBackend answers every request with the backend's name, on the listener takeFreePorts
// opened for addr or on a new one.
func serveBackend(name, addr string) (func(), error) {
	ln := listeners[addr]
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, err
		}
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			_, _ = io.Copy(io.Discard, req.Body)
			_, _ = io.WriteString(rw, name)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}
