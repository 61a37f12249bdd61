package harness_test

import (
	"os"
	"testing"

	"github.com/graylane/graylane/e2e/harness"
)

// TestTraefikBinary finds the binary without building when it is already cached (it skips
// rather than start a long build).
func TestTraefikBinary(t *testing.T) {
	if os.Getenv("GRAYLANE_TRAEFIK") == "" && testing.Short() {
		t.Skip("-short: may build Traefik")
	}
	path := harness.TraefikBinary(t)
	if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s: %v", path, err)
	}
}
