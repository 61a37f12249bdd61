package harness_test

import (
	"net"
	"os"
	"strings"
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

// TestLaunchOnATakenPort checks what StartTraefik relies on to start Traefik again on other
// ports: on a port taken since FreePort chose it, Traefik exits and logs "address already in use".
func TestLaunchOnATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	tr, err := harness.Launch(harness.TraefikBinary(t), t.TempDir(), port, harness.FreePort(t), harness.TraefikOptions{LocalPlugins: map[string]string{}})
	if tr != nil {
		defer tr.Stop()
	}
	if err == nil || tr == nil || !strings.Contains(tr.Log(), "address already in use") {
		t.Fatalf("Launch on a taken port: %v", err)
	}
}
