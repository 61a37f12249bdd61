package harness

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// rootModule is the module path of the repository root.
const rootModule = "github.com/graylane/graylane"

// startDir is the working directory when the process started (the package directory for
// `go test`), before any test changed it with t.Chdir.
var startDir = mustGetwd()

var repoRoot = sync.OnceValue(func() string {
	if dir, ok := findRoot(startDir); ok {
		return dir
	}
	_, file, _, ok := runtime.Caller(0)
	if ok {
		if dir, ok := findRoot(filepath.Dir(file)); ok {
			return dir
		}
	}
	panic("harness: cannot find the repository root (a go.mod declaring module " + rootModule + ")")
})

// RepoRoot returns the repository root: the nearest directory above the process's starting
// working directory (or above this source file) whose go.mod declares module github.com/graylane/graylane.
func RepoRoot() string {
	return repoRoot()
}

func mustGetwd() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	return dir
}

func findRoot(dir string) (string, bool) {
	for {
		if modulePath(filepath.Join(dir, "go.mod")) == rootModule {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func modulePath(goMod string) string {
	f, err := os.Open(goMod)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
