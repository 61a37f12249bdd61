package reliability_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// laneHeader is the lane header every test configures (the default of both plugins).
const laneHeader = "X-Gray-Lane"

func TestMain(m *testing.M) {
	code := m.Run()
	if left := harness.LeftoverChildren(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "reliability: processes still running after the tests: %v\n", left)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// long reports whether the long variants run (GRAYLANE_LONG=1).
func long() bool { return os.Getenv("GRAYLANE_LONG") == "1" }

// newClient returns a client with its own connection pool sized for workers concurrent
// requests, so a test can close its idle connections and count Traefik's goroutines.
func newClient(workers int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        4 * workers,
			MaxIdleConnsPerHost: 2 * workers,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// request is one request a load loop sends.
type request struct {
	method string
	url    string
	host   string
	header http.Header
	body   string // sent when not empty
}

// send sends r and reads the whole answer.
func send(c *http.Client, r request) (*harness.Reply, time.Duration, error) {
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(method, r.url, body)
	if err != nil {
		return nil, 0, err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.host != "" {
		req.Host = r.host
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return nil, time.Since(start), err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return nil, took, err
	}
	reply := &harness.Reply{Status: resp.StatusCode, Header: resp.Header, Body: data}
	var obj map[string]any
	if json.Unmarshal(data, &obj) == nil {
		reply.JSON = obj
	}
	return reply, took, nil
}

// outcome describes the result of send for a failure message.
func outcome(reply *harness.Reply, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("status %d: %.200s", reply.Status, reply.Body)
}

// tally counts outcomes of concurrent requests by key and keeps the first failures.
type tally struct {
	mu       sync.Mutex
	total    int
	counts   map[string]int
	failures int
	examples []string
	maxTook  time.Duration
}

func newTally() *tally { return &tally{counts: map[string]int{}} }

// ok counts a success under key.
func (t *tally) ok(key string, took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total++
	t.counts[key]++
	if took > t.maxTook {
		t.maxTook = took
	}
}

// fail counts a failure and keeps its description if it is among the first ten.
func (t *tally) fail(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total++
	t.failures++
	if len(t.examples) < 10 {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

// count returns the successes counted under key.
func (t *tally) count(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts[key]
}

// String summarizes the tally: total, failures, counts by key, the slowest request.
func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]string, 0, len(t.counts))
	for k := range t.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests, %d failed", t.total, t.failures)
	for _, k := range keys {
		fmt.Fprintf(&b, ", %s=%d", k, t.counts[k])
	}
	fmt.Fprintf(&b, ", slowest %s", t.maxTook.Round(time.Millisecond))
	return b.String()
}

// requireNoFailures fails the test when the tally holds failures, listing the first ones.
func (t *tally) requireNoFailures(tb testing.TB, what string) {
	tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failures > 0 {
		tb.Errorf("%s: %d of %d requests failed; first failures:\n  %s", what, t.failures, t.total, strings.Join(t.examples, "\n  "))
	}
}

// runLoad calls fn(i) for i = 0, 1, … from workers goroutines until limit calls were made,
// ctx is done or maxTime has passed, and returns the number of calls made. pause (may be 0)
// is slept by each worker between two calls.
func runLoad(ctx context.Context, workers, limit int, maxTime, pause time.Duration, fn func(i int)) int {
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= limit {
					return
				}
				fn(i)
				if pause > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(pause):
					}
				}
			}
		}()
	}
	wg.Wait()
	n := int(next.Load())
	if n > limit {
		n = limit
	}
	return n
}

// backgroundLoad runs runLoad in the background until stop is called (or limit / maxTime
// is reached); stop waits for the workers and returns the number of calls made.
func backgroundLoad(workers, limit int, maxTime, pause time.Duration, fn func(i int)) (stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- runLoad(ctx, workers, limit, maxTime, pause, fn) }()
	return func() int {
		cancel()
		return <-done
	}
}

// startTraefik is harness.StartTraefik that fails at once, with Traefik's reason, when the
// plugins did not load (Traefik then disables every plugin, and the routers would never come up).
func startTraefik(tb testing.TB, opts harness.TraefikOptions) *harness.Traefik {
	tb.Helper()
	tr := harness.StartTraefik(tb, opts)
	for _, line := range strings.Split(tr.Log(), "\n") {
		if strings.Contains(line, "Plugins are disabled") {
			tb.Fatalf("traefik did not load the plugins: %s", line)
		}
	}
	return tr
}

// apiClient talks to Traefik's API entry point without keeping connections, so that it adds
// no goroutine to the counts it reads.
var apiClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// metrics reads Traefik's Prometheus metrics and returns every sample, summed over the label
// sets, by metric name.
func metrics(tb testing.TB, tr *harness.Traefik) map[string]float64 {
	tb.Helper()
	resp, err := apiClient.Get(tr.APIURL + "/metrics")
	if err != nil {
		tb.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("metrics: %v", err)
	}
	return out
}

// reloads returns Traefik's count of applied dynamic configurations.
func reloads(tb testing.TB, tr *harness.Traefik) int {
	tb.Helper()
	return int(metrics(tb, tr)["traefik_config_reloads_total"])
}

// waitReloads waits until Traefik has applied at least n configurations.
func waitReloads(tb testing.TB, tr *harness.Traefik, n int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := reloads(tb, tr)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("traefik applied %d configurations, want %d, after %s; log:\n%s", got, n, timeout, tailLog(tr, 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireNoPanic fails the test when Traefik's log mentions a panic or a runtime error.
func requireNoPanic(tb testing.TB, tr *harness.Traefik) {
	tb.Helper()
	log := tr.Log()
	for _, word := range []string{"panic", "runtime error"} {
		if i := strings.Index(strings.ToLower(log), word); i >= 0 {
			start := i - 300
			if start < 0 {
				start = 0
			}
			end := i + 1500
			if end > len(log) {
				end = len(log)
			}
			tb.Errorf("traefik log contains %q:\n%s", word, log[start:end])
			return
		}
	}
}

// tailLog returns the last n lines of Traefik's log.
func tailLog(tr *harness.Traefik, n int) string {
	lines := strings.Split(strings.TrimRight(tr.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitAnswer polls url until check accepts the answer, and fails the test after timeout.
func waitAnswer(tb testing.TB, c *http.Client, r request, timeout time.Duration, check func(*harness.Reply) bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		reply, _, err := send(c, r)
		switch {
		case err != nil:
			last = err.Error()
		case check(reply):
			return
		default:
			last = fmt.Sprintf("%d %s", reply.Status, bytes.TrimSpace(reply.Body))
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s %s: no expected answer after %s; last: %s", r.host, r.url, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hangListener is a TCP server on loopback that accepts connections and reads from them but
// never answers, like a hung application server. It keeps the first hangKeep bytes each
// connection sent (see received).
type hangListener struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	heads []*bytes.Buffer // by connection
	done  chan struct{}
}

// hangKeep is how many bytes a hangListener keeps of each connection: a request's head. A
// connection the listener never answers carries one request.
const hangKeep = 16 << 10

// startHangListener starts a hangListener on addr ("127.0.0.1:0" for a free port) and
// registers a Cleanup that closes it and every connection it accepted.
func startHangListener(tb testing.TB, addr string) *hangListener {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	h := &hangListener{ln: ln, done: make(chan struct{})}
	go h.serve()
	tb.Cleanup(h.close)
	return h
}

// URL is the listener's base URL.
func (h *hangListener) URL() string { return "http://" + h.ln.Addr().String() }

// accepted returns the number of connections accepted so far.
func (h *hangListener) accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// received reports whether a request with the header X-Request-Id: id arrived.
func (h *hangListener) received(id string) bool {
	line := []byte("\r\nX-Request-Id: " + id + "\r\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, head := range h.heads {
		if bytes.Contains(head.Bytes(), line) {
			return true
		}
	}
	return false
}

func (h *hangListener) serve() {
	defer close(h.done)
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		head := new(bytes.Buffer)
		h.mu.Lock()
		h.conns = append(h.conns, c)
		h.heads = append(h.heads, head)
		h.mu.Unlock()
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				h.mu.Lock()
				if room := hangKeep - head.Len(); room > 0 {
					head.Write(buf[:min(n, room)])
				}
				h.mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
}

func (h *hangListener) close() {
	h.ln.Close()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
}

// seenIDs returns the X-Request-Id values backend b received, with how many requests carried
// each (its /seen, asked directly).
func seenIDs(tb testing.TB, b *harness.Backend) map[string]int {
	tb.Helper()
	resp, err := apiClient.Get(b.URL + "/seen")
	if err != nil {
		tb.Fatalf("%s /seen: %v", b.Name, err)
	}
	defer resp.Body.Close()
	var seen struct{ IDs map[string]int }
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s /seen: %s, %v", b.Name, resp.Status, err)
	}
	return seen.IDs
}

// rawRequest writes raw bytes to addr (host:port) and returns the status code of the answer.
func rawRequest(addr string, raw []byte) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(raw); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
