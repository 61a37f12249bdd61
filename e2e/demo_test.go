package e2e_test

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/graylane/graylane/e2e/harness"
)

// TestDemo runs `make demo`'s program briefly: it must start, split the traffic over the three
// backends, raise the canary share by a hot reload, fail no request and stop by itself.
func TestDemo(t *testing.T) {
	harness.TraefikBinary(t) // build first, outside the demo's time budget
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/demo", "-duration", "14s")
	cmd.Dir = harness.RepoRoot() + "/e2e"
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
	for _, m := range regexp.MustCompile(`(\d+) requests, (\d+) failed, (\d+) sticky`).FindAllStringSubmatch(text, -1) {
		if m[1] == "0" || m[2] != "0" || m[3] != "0" {
			t.Errorf("demo phase: %s", m[0])
		}
	}
}
