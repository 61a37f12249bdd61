package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// DefaultLocalPlugins are the local plugins StartTraefik declares when TraefikOptions.LocalPlugins
// is nil: alias → module name.
func DefaultLocalPlugins() map[string]string {
	return map[string]string{
		"graylane-mark":     "github.com/graylane/graylane/mark",
		"graylane-dispatch": "github.com/graylane/graylane/dispatch",
	}
}

// pluginDirs are the repository directories (relative to RepoRoot) that make up the plugin
// source tree Traefik loads.
var pluginDirs = []string{".", "mark", "dispatch"}

// InstallPlugins lays the plugin source out the way Traefik expects local plugins, under
// <dir>/plugins-local/src/: the repository's plugin files (root, mark/ and dispatch/: non-test
// .go files and .traefik.yml, plus the root go.mod) go to github.com/graylane/graylane, and each
// entry of extra (module name → directory) has that directory's regular files copied to
// <module name> (test files excluded). It returns <dir>/plugins-local.
func InstallPlugins(tb testing.TB, dir string, extra map[string]string) string {
	tb.Helper()
	local, err := installPlugins(dir, extra)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return local
}

func installPlugins(dir string, extra map[string]string) (string, error) {
	local := filepath.Join(dir, "plugins-local")
	dst := filepath.Join(local, "src", filepath.FromSlash(rootModule))
	root := RepoRoot()
	for _, sub := range pluginDirs {
		if err := copyPluginFiles(filepath.Join(root, sub), filepath.Join(dst, sub), sub == "."); err != nil {
			return "", fmt.Errorf("install plugin source: %w", err)
		}
	}
	for module, src := range extra {
		if err := copyPluginFiles(src, filepath.Join(local, "src", filepath.FromSlash(module)), true); err != nil {
			return "", fmt.Errorf("install plugin %s: %w", module, err)
		}
	}
	return local, nil
}

// copyPluginFiles copies the non-test .go files and the .traefik.yml of src into dst (not
// recursively); withGoMod also copies go.mod.
func copyPluginFiles(src, dst string, withGoMod bool) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !isPluginFile(name, withGoMod) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

func isPluginFile(name string, withGoMod bool) bool {
	switch name {
	case ".traefik.yml":
		return true
	case "go.mod":
		return withGoMod
	default:
		return strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")
	}
}
