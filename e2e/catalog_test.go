package e2e_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/traefik/traefik/v3/pkg/plugins"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/graylane/graylane/e2e/harness"
)

// moduleZipDownloader stands for the plugin catalog: it hands Traefik the repository as the
// module zip that the Go module proxy serves for a release (the catalog downloads that zip),
// made by the same rules (golang.org/x/mod/zip: the e2e module, which has a go.mod of its own,
// is left out).
type moduleZipDownloader struct{ dir string }

// Download writes the module zip of the repository for name@version and returns its hash.
func (d moduleZipDownloader) Download(_ context.Context, name, version string) (string, error) {
	path := filepath.Join(d.dir, filepath.FromSlash(name), version+".zip")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return "h1:test", modzip.CreateFromDir(f, module.Version{Path: name, Version: version}, harness.RepoRoot())
}

// Check accepts every hash: the zip was just made from the repository.
func (moduleZipDownloader) Check(context.Context, string, string, string) error { return nil }

// TestCatalogInstall installs graylane the way Traefik installs a plugin of its catalog
// (experimental.plugins: the module zip unzipped into plugins-storage/sources/gop-*/src, the
// manifest read there), builds the facade with Traefik's own loader, which must find the mark
// and dispatch packages inside the module, and runs a request through both roles.
func TestCatalogInstall(t *testing.T) {
	dir := t.TempDir()
	manager, err := plugins.NewManager(moduleZipDownloader{dir: filepath.Join(dir, "archives")}, plugins.ManagerOptions{Output: dir})
	if err != nil {
		t.Fatal(err)
	}
	descriptors := map[string]plugins.Descriptor{"graylane": {ModuleName: "github.com/graylane/graylane", Version: "v0.1.0"}}
	if err := plugins.SetupRemotePlugins(manager, descriptors); err != nil {
		t.Fatalf("installing from the catalog: %v", err)
	}
	manifest, err := manager.ReadManifest("github.com/graylane/graylane")
	if err != nil {
		t.Fatal(err)
	}
	builder, err := plugins.NewBuilder(manager, descriptors, nil)
	if err != nil {
		t.Fatalf("Traefik's loader cannot load the catalog plugin: %v", err)
	}
	if _, err := newHandler(builder, "graylane", manifest.TestData, nextHandler); err != nil {
		t.Fatalf("testData rejected: %v", err)
	}

	canary := echoServer(t, "canary")
	h, err := newHandler(builder, "graylane", map[string]any{
		"mark": map[string]any{
			"identity": map[string]any{"header": "X-User-Id"},
			"rules":    []any{map[string]any{"name": "testers", "lane": "canary", "users": []any{"1001"}}},
		},
		"dispatch": map[string]any{
			"lanes": map[string]any{"canary": map[string]any{"servers": []any{map[string]any{"url": canary.URL}}}},
		},
	}, nextHandler)
	if err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"1001": "canary lane=canary", "2002": "next lane="} {
		req := httptest.NewRequest(http.MethodGet, "http://gray.test/", nil)
		req.Header.Set("X-User-Id", user)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Body.String(); !strings.HasPrefix(got, want) {
			t.Errorf("user %s: answered %q, want %q…", user, got, want)
		}
	}
}
