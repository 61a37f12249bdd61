package main

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A visitor is one synthetic client; anonymous visitors keep the sticky cookie graylane issues.
type visitor struct {
	kind     string // tester, app, beta, user or anonymous
	userID   string
	version  string
	cookie   string
	lastLane string
	busy     bool // a request of this visitor is in flight: a real browser does not race its first cookie
}

// board sends the synthetic traffic and counts where it lands, per phase.
type board struct {
	url    string
	client *http.Client

	mu       sync.Mutex
	phases   []*tally
	started  time.Time
	visitors []*visitor
	// printed is the last 5-second slot drawn when the output is not a terminal.
	printed int
}

// tally counts one phase of the demo.
type tally struct {
	title    string
	total    int
	failed   int
	backend  map[string]int
	rule     map[string]int
	kindLane map[string]map[string]int
	left     int // anonymous visitors who left the canary lane within the phase: raising a share only adds
}

func newTally(title string) *tally {
	return &tally{title: title, backend: map[string]int{}, rule: map[string]int{}, kindLane: map[string]map[string]int{}}
}

func newBoard(url string) *board {
	b := &board{
		url:     url,
		client:  &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		phases:  []*tally{newTally("canary-share at 10 %")},
		started: time.Now(),
	}
	versions := []string{"2.2.0", "2.3.1", "2.9.0", "3.0.0", "v1.8"}
	for i := 0; i < 600; i++ {
		v := &visitor{kind: "anonymous"}
		switch {
		case i < 3:
			v.kind, v.userID = "tester", strconv.Itoa(1001+i)
		case i < 100:
			v.kind, v.userID, v.version = "app", "app-"+strconv.Itoa(i), versions[i%len(versions)]
		case i < 150:
			v.kind, v.userID = "beta", "reader-"+strconv.Itoa(i)
		case i < 400:
			v.kind, v.userID = "user", "user-"+strconv.Itoa(i)
		}
		b.visitors = append(b.visitors, v)
	}
	return b
}

func (b *board) phase(title string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.phases = append(b.phases, newTally(title))
	for _, v := range b.visitors {
		v.lastLane = ""
	}
}

func (b *board) failed() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, p := range b.phases {
		n += p.failed
	}
	return n
}

// load runs workers that each send requests, one at a time, for random visitors until ctx ends.
func (b *board) load(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(seed))
			for ctx.Err() == nil {
				b.send(ctx, b.visitors[rnd.Intn(len(b.visitors))])
				time.Sleep(5 * time.Millisecond)
			}
		}(int64(w + 1))
	}
	wg.Wait()
}

func (b *board) send(ctx context.Context, v *visitor) {
	path := "/products"
	if v.kind == "beta" {
		path = "/beta/checkout"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+path, nil)
	if err != nil {
		return
	}
	b.mu.Lock()
	if v.busy {
		b.mu.Unlock()
		return
	}
	v.busy = true
	if v.userID != "" {
		req.Header.Set("X-User-Id", v.userID)
	}
	if v.version != "" {
		req.Header.Set("X-App-Version", v.version)
	}
	if v.cookie != "" {
		req.Header.Set("Cookie", v.cookie)
	}
	b.mu.Unlock()

	resp, err := b.client.Do(req)
	if ctx.Err() != nil {
		if err == nil {
			resp.Body.Close()
		}
		return // the demo is over; an interrupted request is not a failure
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	v.busy = false
	t := b.phases[len(b.phases)-1]
	t.total++
	if err != nil {
		t.failed++
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.failed++
		return
	}
	lane := string(body)
	for _, c := range resp.Cookies() {
		if c.Name == "graylane_id" {
			v.cookie = c.Name + "=" + c.Value
		}
	}
	rule := resp.Header.Get("X-Gray-Rule")
	if rule == "" {
		rule = "(no rule)"
	}
	t.backend[lane]++
	t.rule[rule]++
	if t.kindLane[v.kind] == nil {
		t.kindLane[v.kind] = map[string]int{}
	}
	t.kindLane[v.kind][lane]++
	if v.kind == "anonymous" && v.lastLane == "canary" && lane != "canary" {
		t.left++
	}
	v.lastLane = lane
}

// draw prints the board; on a terminal it redraws in place.
func (b *board) draw(w io.Writer, final bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	fi, err := os.Stdout.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	if tty {
		sb.WriteString("\033[H\033[2J")
	} else if slot := int(time.Since(b.started) / (5 * time.Second)); !final {
		if slot == b.printed {
			return // not a terminal: a snapshot every 5 seconds is enough
		}
		b.printed = slot
	}
	fmt.Fprintf(&sb, "graylane demo — Traefik at %s — %s elapsed (Ctrl-C stops)\n", b.url, time.Since(b.started).Round(time.Second))
	for i, t := range b.phases {
		fmt.Fprintf(&sb, "\nphase %d: %s — %d requests, %d failed, %d sticky anonymous visitors left canary\n", i+1, t.title, t.total, t.failed, t.left)
		sb.WriteString("  backends:\n")
		for _, name := range []string{"stable", "canary", "beta"} {
			fmt.Fprintf(&sb, "    %-8s %6d %s\n", name, t.backend[name], bar(t.backend[name], t.total))
		}
		sb.WriteString("  matched rule:\n")
		for _, rule := range sortedKeys(t.rule) {
			fmt.Fprintf(&sb, "    %-14s %6d\n", rule, t.rule[rule])
		}
		sb.WriteString("  visitors → canary share:\n")
		for _, kind := range []string{"tester", "app", "beta", "user", "anonymous"} {
			lanes := t.kindLane[kind]
			n := 0
			for _, c := range lanes {
				n += c
			}
			fmt.Fprintf(&sb, "    %-10s %5.1f %% canary, %5.1f %% beta of %d\n", kind, share(lanes["canary"], n), share(lanes["beta"], n), n)
		}
	}
	_, _ = io.WriteString(w, sb.String())
}

func bar(n, total int) string {
	if total == 0 {
		return ""
	}
	return strings.Repeat("█", n*40/total) + fmt.Sprintf(" %.1f %%", share(n, total))
}

func share(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(n) / float64(total)
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
