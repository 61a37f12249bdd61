package e2e_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// TestDemo runs `make demo`'s program briefly: it must start, split the traffic over the three
// backends, raise the canary share by a hot reload, fail no request and stop by itself. It runs
// the program built, not through go run, so that a timeout kills the demo itself (its Traefik
// dies with it), and on free ports, so that nothing else listening on the demo's fixed ports
// fails it.
func TestDemo(t *testing.T) {
	harness.TraefikBinary(t) // build first, outside the demo's time budget
	demo := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", demo, "./cmd/demo")
	build.Dir = harness.RepoRoot() + "/e2e"
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/demo: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-duration", "14s", "-free-ports")
	cmd.Dir = build.Dir
	harness.DiesWithTest(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"phase 1: canary-share at 10 %", "phase 2: canary-share raised from 10 % to 50 %", "stable", "canary", "beta"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	phases := regexp.MustCompile(`(\d+) requests, (\d+) failed, (\d+) sticky`).FindAllStringSubmatch(text, -1)
	if len(phases) < 2 {
		t.Fatalf("demo output shows %d phases, want 2:\n%s", len(phases), text)
	}
	for _, m := range phases {
		if m[1] == "0" || m[2] != "0" || m[3] != "0" {
			t.Errorf("demo phase: %s", m[0])
		}
	}
	// The hot reload raised the percentage: identified users' canary share in the final board,
	// about 10 % in phase 1 and 50 % in phase 2 (a phase-2 tally counts from the file's rewrite,
	// before Traefik applied it, so a little of the old share is in it).
	final := text[strings.LastIndex(text, "phase 1:"):]
	shares := regexp.MustCompile(`(?m)^\s+user\s+([\d.]+) % canary`).FindAllStringSubmatch(final, -1)
	if len(shares) != 2 {
		t.Fatalf("final board has %d user share lines, want 2:\n%s", len(shares), final)
	}
	first, _ := strconv.ParseFloat(shares[0][1], 64)
	second, _ := strconv.ParseFloat(shares[1][1], 64)
	if first < 5 || first > 16 || second < 35 {
		t.Errorf("users' canary share %.1f %% then %.1f %%, want about 10 %% then about 50 %%", first, second)
	}
}
