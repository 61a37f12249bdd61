package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	traefikplugins "github.com/traefik/traefik/v3/pkg/plugins"
	"gopkg.in/yaml.v3"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/graylane/graylane/e2e/harness"
	"github.com/graylane/graylane/e2e/kube"
)

// The demo manifests' in-cluster URL of the canary Service, which the test replaces with the
// canary backend process's loopback URL (no cluster DNS runs here).
const canaryClusterURL = "http://whoami-canary.graylane-demo.svc.cluster.local:80"

// demoHost is the host the demo IngressRoute matches.
const demoHost = "app.example.com"

// TestKubernetesCRD runs graylane the way Kubernetes users do: a real kube-apiserver (with
// etcd) holds the demo manifests of demo/k8s (the API server's schema validation is their
// check), and Traefik's kubernetesCRD provider builds the IngressRoute with the graylane-mark
// and graylane-dispatch Middleware resources. Pods do not run: EndpointSlices point the demo
// Services at two loopback backend processes, and the dispatch lane URL at the canary one.
func TestKubernetesCRD(t *testing.T) {
	start := time.Now()
	demo := startDemo(t)
	cluster, middlewares, salt := demo.cluster, demo.middlewares, demo.salt
	cluster.Apply(t, demoFile(t, "ingressroute.yaml"))

	// The ConfigMaps the Helm chart renders from values.yaml for the inline plugins
	// (templates/local-plugins-cm.yaml: data is the source map): the API server accepts
	// their keys and size.
	for alias, p := range chartLocalPlugins(t) {
		cm, err := json.Marshal(map[string]any{
			"apiVersion": "v1",
			"kind":       "ConfigMap",
			"metadata":   map[string]any{"name": "traefik-local-plugin-" + alias, "namespace": "default"},
			"data":       p.Source,
		})
		if err != nil {
			t.Fatal(err)
		}
		cluster.Apply(t, string(cm))
	}

	traefik := harness.StartTraefik(t, harness.TraefikOptions{ExtraStatic: kubeProviders(cluster, "kubernetesCRD")})
	waitServing(t, traefik.URL, 60*time.Second)
	t.Logf("Traefik serves the IngressRoute %v after the cluster started", time.Since(start).Round(time.Millisecond))

	users := make([]string, 200)
	for i := range users {
		users[i] = "user-" + strconv.Itoa(i)
	}

	t.Run("lanes", func(t *testing.T) {
		outsider := firstUser(t, users, salt, 10, false)
		for _, tc := range []struct {
			name    string
			path    string
			headers map[string]string
			want    string
		}{
			{"tester", "/", map[string]string{"X-User-Id": "1001"}, "canary"},
			{"new app version", "/", map[string]string{"X-User-Id": outsider, "X-App-Version": "2.4.1"}, "canary"},
			{"old app version", "/", map[string]string{"X-User-Id": outsider, "X-App-Version": "2.2.9"}, "stable"},
			{"beta page", "/beta/cart", map[string]string{"X-User-Id": outsider}, "canary"},
			{"other user", "/", map[string]string{"X-User-Id": outsider}, "stable"},
			{"client lane header stripped", "/", map[string]string{"X-User-Id": outsider, "X-Gray-Lane": "canary"}, "stable"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.headers["Host"] = demoHost
				r := harness.Do(t, "GET", traefik.URL+tc.path, tc.headers, nil)
				if r.Status != 200 || r.Backend() != tc.want {
					t.Fatalf("GET %s %v: status %d from %q (X-Gray-Rule %q), want 200 from %q; body %s",
						tc.path, tc.headers, r.Status, r.Backend(), r.Header.Get("X-Gray-Rule"), tc.want, r.Body)
				}
			})
		}
	})

	t.Run("secret salt", func(t *testing.T) {
		// The percentage rule's salt is urn:k8s:secret:graylane-salt:checkout, which Traefik
		// resolves from the Secret. Make sure the users tell that salt apart from the two a
		// broken resolution would leave (the URN itself, or the rule name by default).
		for _, wrong := range []string{"urn:k8s:secret:graylane-salt:checkout", "checkout-rollout"} {
			if sameSplit(users, salt, wrong, 10) {
				t.Fatalf("the test users split the same with salt %q and %q: pick other users", salt, wrong)
			}
		}
		if got, want := canaryUsers(t, traefik.URL, users), expectedCanary(users, salt, 10); got != want {
			t.Fatalf("canary users at 10%% with the Secret's salt:\n got  %s\n want %s", got, want)
		}

		// Rotating the salt in the Secret alone reloads the middleware and reshuffles.
		const rotated = "checkout-v3-rotated"
		if sameSplit(users, salt, rotated, 10) {
			t.Fatalf("the test users split the same with salt %q and %q", salt, rotated)
		}
		cluster.Apply(t, `
apiVersion: v1
kind: Secret
metadata: {name: graylane-salt, namespace: graylane-demo}
stringData: {checkout: `+rotated+`}
`)
		applied := time.Now()
		waitCanary(t, traefik.URL, users, expectedCanary(users, rotated, 10), 20*time.Second)
		t.Logf("the rotated salt took effect %v after the Secret changed", time.Since(applied).Round(time.Millisecond))
		salt = rotated // the later applies of the demo file keep it: the file has no Secret
	})

	t.Run("percentage hot reload under load", func(t *testing.T) {
		const before, after = "percent: 10\n", "percent: 50\n"
		if strings.Count(middlewares, before) != 1 {
			t.Fatalf("demo/k8s/middlewares.yaml should hold %q once", before)
		}
		var total, failed atomic.Int64
		var firstFailure atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; ; i += 4 {
					select {
					case <-stop:
						return
					default:
					}
					r, err := harness.TryDo("GET", traefik.URL+"/", map[string]string{"Host": demoHost, "X-User-Id": users[i%len(users)]}, nil)
					total.Add(1)
					if err != nil || r.Status != 200 {
						failed.Add(1)
						if err == nil {
							err = fmt.Errorf("status %d: %s", r.Status, r.Body)
						}
						firstFailure.CompareAndSwap(nil, err.Error())
					}
				}
			}(w)
		}
		stopLoad := func() {
			select {
			case <-stop:
			default:
				close(stop)
			}
			wg.Wait()
		}
		defer stopLoad()

		time.Sleep(500 * time.Millisecond)
		applied := time.Now()
		cluster.Apply(t, strings.Replace(middlewares, before, after, 1))
		waitCanary(t, traefik.URL, users, expectedCanary(users, salt, 50), 20*time.Second)
		t.Logf("percent 10 -> 50 took effect %v after kubectl-style apply", time.Since(applied).Round(time.Millisecond))
		time.Sleep(500 * time.Millisecond)
		stopLoad()
		t.Logf("%d requests under load during the reload, %d failed", total.Load(), failed.Load())
		if n := failed.Load(); n != 0 {
			t.Fatalf("%d of %d requests failed during the reload; first: %v", n, total.Load(), firstFailure.Load())
		}
		if total.Load() < 50 {
			t.Fatalf("only %d requests under load: the load loop did not run", total.Load())
		}
	})

	t.Run("https lane with its CA from a Secret", func(t *testing.T) {
		certFile, keyFile := harness.TLSCertificate(t)
		secure := harness.StartBackend(t, "secure", "-tls-cert", certFile, "-tls-key", keyFile)
		ca, err := os.ReadFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := json.Marshal(map[string]any{
			"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
			"metadata":   map[string]any{"name": "lane-ca", "namespace": "graylane-demo"},
			"stringData": map[string]any{"ca.crt": string(ca)},
		})
		if err != nil {
			t.Fatal(err)
		}
		cluster.Apply(t, string(secret))
		cluster.Apply(t, `
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata:
  name: gray-dispatch-tls
  namespace: graylane-demo
spec:
  plugin:
    graylane-dispatch:
      lanes:
        secure:
          servers: [{url: "`+secure.URL+`"}]
          fallback: none
      tls:
        rootCAs: ["urn:k8s:secret:lane-ca:ca.crt"]
---
`+stableRoute("whoami-tls", "tls.example.com", "gray-dispatch-tls"))
		waitBackend(t, traefik.URL, map[string]string{"Host": "tls.example.com", "X-Gray-Lane": "secure"}, "secure", 30*time.Second)
	})

	t.Run("long users list", func(t *testing.T) {
		// 50,000 testers (a Middleware of about 800 KB): the API server stores it (etcd takes
		// objects up to about 1.5 MiB) and Traefik builds it. Client-side kubectl apply would
		// also copy the object into its last-applied-configuration annotation, and the API
		// server refuses annotations over 256 KiB in all: the README says to use
		// kubectl apply --server-side (or create/replace) for such lists.
		ids := make([]string, 50000)
		for i := range ids {
			ids[i] = fmt.Sprintf(`"tester-%05d"`, i)
		}
		middleware := `apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata:
  name: gray-mark-many
  namespace: graylane-demo
spec:
  plugin:
    graylane-mark:
      identity: {header: X-User-Id}
      rules:
        - name: testers
          lane: canary
          users: [` + strings.Join(ids, ", ") + `]
`
		objs, err := kube.Decode(middleware)
		if err != nil {
			t.Fatal(err)
		}
		copied, err := json.Marshal(objs[0].Object)
		if err != nil {
			t.Fatal(err)
		}
		annotated := strings.Replace(middleware, "  namespace: graylane-demo\n",
			"  namespace: graylane-demo\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: "+strconv.Quote(string(copied))+"\n", 1)
		if err := cluster.ApplyErr(annotated); err == nil || !strings.Contains(err.Error(), "Too long: must have at most 262144 bytes") {
			t.Errorf("the list with client-side apply's annotation: error %v, want the API server's annotation size limit", err)
		}
		cluster.Apply(t, middleware+`---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata:
  name: whoami-many
  namespace: graylane-demo
spec:
  entryPoints: [web]
  routes:
    - kind: Rule
      match: Host(`+"`many.example.com`"+`)
      middlewares: [{name: gray-mark-many}, {name: gray-dispatch}]
      services: [{name: whoami-stable, port: http}]
`)
		waitBackend(t, traefik.URL, map[string]string{"Host": "many.example.com", "X-User-Id": "tester-49999"}, "canary", 30*time.Second)
		waitBackend(t, traefik.URL, map[string]string{"Host": "many.example.com", "X-User-Id": "tester-50000"}, "stable", 5*time.Second)
	})

	t.Run("bad middleware", func(t *testing.T) {
		cluster.Apply(t, `
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata:
  name: gray-mark-bad
  namespace: graylane-demo
spec:
  plugin:
    graylane-mark:
      identity: {header: X-User-Id}
      rules:
        - name: testers
          lane: "Canary!"
          users: ["1001"]
---
`+stableRoute("whoami-bad", "bad.example.com", "gray-mark-bad"))
		traefik.WaitLog(t, `rules[0].lane`, 20*time.Second)
		for _, line := range strings.Split(traefik.Log(), "\n") {
			if strings.Contains(line, "rules[0].lane") {
				t.Logf("Traefik log: %s", line)
				if !strings.Contains(line, "Canary!") {
					t.Errorf("the error does not name the bad value %q", "Canary!")
				}
				break
			}
		}
		r := harness.Do(t, "GET", traefik.URL+"/", map[string]string{"Host": "bad.example.com"}, nil)
		t.Logf("the route with the bad middleware answers %d", r.Status)
		for user, want := range map[string]string{"1001": "canary", firstUser(t, users, salt, 50, false): "stable"} {
			r := harness.Do(t, "GET", traefik.URL+"/", map[string]string{"Host": demoHost, "X-User-Id": user}, nil)
			if r.Status != 200 || r.Backend() != want {
				t.Errorf("user %s after the bad middleware: status %d from %q, want 200 from %q", user, r.Status, r.Backend(), want)
			}
		}
	})
	t.Logf("whole Kubernetes test: %v", time.Since(start).Round(time.Millisecond))
}

// demoSetup is the demo of demo/k8s applied to a fresh cluster, routes left out.
type demoSetup struct {
	cluster *kube.Cluster
	// middlewares is demo/k8s/middlewares.yaml as applied: the canary lane sent to the canary
	// backend process instead of the canary Service's cluster DNS name.
	middlewares string
	// salt is the salt Secret's value.
	salt string
}

// startDemo starts a cluster (skipping the test when GRAYLANE_SKIP_K8S=1, or when
// GRAYLANE_SKIP_TRAEFIK is set, before the cluster starts), installs the Traefik CRDs, starts
// the stable and canary backend processes, and applies the demo application (apps.yaml), the
// salt Secret, EndpointSlices pointing the demo Services at the backends, and the demo
// Middlewares (middlewares.yaml). The routes are the caller's.
func startDemo(t *testing.T) *demoSetup {
	t.Helper()
	if os.Getenv("GRAYLANE_SKIP_K8S") == "1" {
		t.Skip("GRAYLANE_SKIP_K8S=1: skipping the Kubernetes test (it runs etcd and kube-apiserver, built once by scripts/build-kube.sh)")
	}
	harness.TraefikBinary(t) // skips with GRAYLANE_SKIP_TRAEFIK before the cluster starts

	start := time.Now()
	cluster := kube.Start(t)
	t.Logf("etcd + kube-apiserver ready in %v (kubeconfig: %s)", time.Since(start).Round(time.Millisecond), cluster.Kubeconfig)
	cluster.InstallTraefikCRDs(t)

	stable := harness.StartBackend(t, "stable")
	canary := harness.StartBackend(t, "canary")

	cluster.Apply(t, demoFile(t, "apps.yaml"))
	// The salt Secret, which the README has the user create once with kubectl create secret
	// (the demo files leave it out, so that applying them again keeps the salt).
	cluster.Apply(t, `
apiVersion: v1
kind: Secret
metadata: {name: graylane-salt, namespace: graylane-demo}
stringData: {checkout: 5d1f0c9a7e3b2468ace0f1b2c3d4e5f6}
`)
	cluster.Apply(t, loopbackEndpoints(t, "whoami-stable", stable.URL)+"---\n"+loopbackEndpoints(t, "whoami-canary", canary.URL))
	middlewares := demoFile(t, "middlewares.yaml")
	if !strings.Contains(middlewares, canaryClusterURL) {
		t.Fatalf("demo/k8s/middlewares.yaml no longer sends the canary lane to %s: update the test", canaryClusterURL)
	}
	middlewares = strings.ReplaceAll(middlewares, canaryClusterURL, canary.URL)
	cluster.Apply(t, middlewares)
	return &demoSetup{
		cluster:     cluster,
		middlewares: middlewares,
		salt:        secretValue(t, cluster, "graylane-demo", "graylane-salt", "checkout"),
	}
}

// kubeProviders returns Traefik static configuration (YAML) enabling the named Kubernetes
// providers (kubernetesCRD, kubernetesGateway), each pointed at the cluster's API server
// with its admin token and watching the graylane-demo namespace.
func kubeProviders(c *kube.Cluster, providers ...string) string {
	var b strings.Builder
	b.WriteString("providers:\n")
	for _, p := range providers {
		fmt.Fprintf(&b, "  %s:\n    endpoint: %q\n    token: %q\n    certAuthFilePath: %q\n    namespaces: [graylane-demo]\n",
			p, c.Endpoint, c.Token, c.CAFile)
	}
	return b.String()
}

// TestKubernetesValuesUpToDate checks that demo/helm/values.yaml is what
// scripts/gen-k8s-values.sh generates from the current plugin source, and that its inline
// plugin sources are the repository's files byte for byte.
func TestKubernetesValuesUpToDate(t *testing.T) {
	root := harness.RepoRoot()
	committed, err := os.ReadFile(filepath.Join(root, "demo", "helm", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "values.yaml")
	cmd := exec.Command(filepath.Join(root, "scripts", "gen-k8s-values.sh"), fresh)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/gen-k8s-values.sh: %v\n%s", err, out)
	}
	generated, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, generated) {
		t.Fatal("demo/helm/values.yaml is out of date: run make k8s-values")
	}

	plugins := chartLocalPlugins(t)
	for alias, dir := range map[string]string{"graylane-mark": "mark", "graylane-dispatch": "dispatch"} {
		p, ok := plugins[alias]
		if !ok {
			t.Fatalf("values.yaml declares no local plugin %s", alias)
		}
		if p.Type != "inlinePlugin" || p.ModuleName != "github.com/graylane/graylane/"+dir ||
			p.MountPath != "/plugins-local/src/"+p.ModuleName {
			t.Errorf("%s: type %q, moduleName %q, mountPath %q", alias, p.Type, p.ModuleName, p.MountPath)
		}
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Join(root, dir, ".traefik.yml"))
		n := 0
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			n++
			want, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := p.Source[filepath.Base(f)]; !ok || got != string(want) {
				t.Errorf("%s: source %s differs from %s/%s", alias, filepath.Base(f), dir, filepath.Base(f))
			}
		}
		if len(p.Source) != n {
			t.Errorf("%s: %d source files, the repository has %d", alias, len(p.Source), n)
		}
	}

	// The Pod annotation that rolls the Pods on new plugin code: a valid annotation (the API
	// server's own check), whose value is the SHA-256 of the inlined sources.
	var values struct {
		Deployment struct {
			PodAnnotations map[string]string `yaml:"podAnnotations"`
		} `yaml:"deployment"`
	}
	if err := yaml.Unmarshal(committed, &values); err != nil {
		t.Fatal(err)
	}
	annotations := values.Deployment.PodAnnotations
	if errs := apivalidation.ValidateAnnotations(annotations, field.NewPath("metadata", "annotations")); len(errs) > 0 {
		t.Errorf("deployment.podAnnotations: %v", errs.ToAggregate())
	}
	if sum := annotations["graylane/plugin-source-sha256"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
		t.Errorf("deployment.podAnnotations: graylane/plugin-source-sha256 is %q, want the SHA-256 of the plugin source", sum)
	}
}

// chartLocalPlugin is an entry of experimental.localPlugins in the Helm values.
type chartLocalPlugin struct {
	Type       string            `yaml:"type"`
	ModuleName string            `yaml:"moduleName"`
	MountPath  string            `yaml:"mountPath"`
	Source     map[string]string `yaml:"source"`
}

// chartLocalPlugins reads experimental.localPlugins from demo/helm/values.yaml.
func chartLocalPlugins(t *testing.T) map[string]chartLocalPlugin {
	t.Helper()
	var values struct {
		Experimental struct {
			LocalPlugins map[string]chartLocalPlugin `yaml:"localPlugins"`
		} `yaml:"experimental"`
	}
	data, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "demo", "helm", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatalf("demo/helm/values.yaml: %v", err)
	}
	return values.Experimental.LocalPlugins
}

// TestKubernetesInlinePluginLayout loads the plugins with Traefik's own loader from a
// plugins-local tree laid out the way the Helm chart mounts the inline-plugin ConfigMaps:
// only the <module> directories, holding the source files of values.yaml as the kubelet
// writes a ConfigMap volume (each file a symlink into ..data, itself a symlink to a
// timestamped directory); no repository root, no go.mod. Then it builds the demo's
// Middlewares (middlewares.yaml) through Traefik's plugin builder, their configuration
// decoded as the kubernetesCRD provider does (through JSON).
func TestKubernetesInlinePluginLayout(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // Traefik reads local plugins from ./plugins-local, like / in the container
	descs := map[string]traefikplugins.LocalDescriptor{}
	for alias, p := range chartLocalPlugins(t) {
		writeConfigMapVolume(t, filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(p.MountPath, "/"))), p.Source)
		descs[alias] = traefikplugins.LocalDescriptor{ModuleName: p.ModuleName}
	}
	if err := traefikplugins.SetupLocalPlugins(descs); err != nil {
		t.Fatalf("Traefik's local plugin manifest checks: %v", err)
	}
	start := time.Now()
	builder, err := traefikplugins.NewBuilder(nil, nil, descs)
	if err != nil {
		t.Fatalf("Traefik's loader cannot load the inline plugins: %v", err)
	}
	t.Logf("Yaegi loaded %d plugins from the ConfigMap layout in %v", len(descs), time.Since(start).Round(time.Millisecond))

	objs, err := kube.Decode(demoFile(t, "middlewares.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	built := 0
	for _, obj := range objs {
		if obj.GetKind() != "Middleware" {
			continue
		}
		plugin, _ := obj.Object["spec"].(map[string]any)["plugin"].(map[string]any)
		raw, err := json.Marshal(plugin)
		if err != nil {
			t.Fatal(err)
		}
		var confs map[string]map[string]any
		if err := json.Unmarshal(raw, &confs); err != nil {
			t.Fatal(err)
		}
		for alias, conf := range confs {
			construct, err := builder.Build(alias, conf, obj.GetName()+"@kubernetescrd")
			if err == nil {
				_, err = construct(context.Background(), http.NotFoundHandler())
			}
			if err != nil {
				t.Errorf("Middleware %s, plugin %s: %v", obj.GetName(), alias, err)
			}
			built++
		}
	}
	if built != 2 {
		t.Errorf("built %d plugin middlewares from middlewares.yaml, want 2", built)
	}
}

// writeConfigMapVolume lays files out in dir as the kubelet writes a ConfigMap volume.
func writeConfigMapVolume(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	const data = "..2026_01_01_00_00_00.000000001"
	if err := os.MkdirAll(filepath.Join(dir, data), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(data, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, data, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func demoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "demo", "k8s", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// loopbackEndpoints returns an EndpointSlice of service whose one endpoint is the process
// listening at backendURL, standing for the slice the EndpointSlice controller would create
// for the Service's Pods. The API server refuses loopback addresses in IPv4 and IPv6 slices
// (no Pod has one), so the slice is of the FQDN address type, whose addresses are only checked
// to be domain-name shaped ("127.0.0.1" is); Traefik reads endpoint addresses whatever the
// type, so the IngressRoute → Service → EndpointSlice path is the one a cluster takes.
func loopbackEndpoints(t *testing.T, service, backendURL string) string {
	t.Helper()
	u, err := url.Parse(backendURL)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-loopback
  namespace: graylane-demo
  labels:
    kubernetes.io/service-name: %[1]s
addressType: FQDN
ports:
  - {name: http, port: %[3]s, protocol: TCP}
endpoints:
  - addresses: [%[2]q]
    conditions: {ready: true, serving: true}
`, service, u.Hostname(), u.Port())
}

func secretValue(t *testing.T, c *kube.Cluster, namespace, name, key string) string {
	t.Helper()
	s := c.Get(t, "v1", "Secret", namespace, name)
	data, _ := s.Object["data"].(map[string]any)
	enc, _ := data[key].(string)
	if enc == "" {
		t.Fatalf("Secret %s/%s has no key %s", namespace, name, key)
	}
	// The API server returns data base64-encoded.
	dec, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	return string(dec)
}

// waitServing waits until the demo route answers from the stable backend.
func waitServing(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	waitBackend(t, base, map[string]string{"Host": demoHost, "X-User-Id": "probe"}, "", timeout)
}

// stableRoute returns an IngressRoute called name in graylane-demo that sends host through the
// Middleware middleware to the Service whoami-stable.
func stableRoute(name, host, middleware string) string {
	return `apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata:
  name: ` + name + `
  namespace: graylane-demo
spec:
  entryPoints: [web]
  routes:
    - kind: Rule
      match: Host(` + "`" + host + "`" + `)
      middlewares:
        - name: ` + middleware + `
      services:
        - name: whoami-stable
          port: http
`
}

// waitBackend waits until a GET of base/ with the given headers is answered 200 by the backend
// want (any backend when want is empty), and fails the test after timeout.
func waitBackend(t *testing.T, base string, headers map[string]string, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		r, err := harness.TryDo("GET", base+"/", headers, nil)
		if err == nil && r.Status == 200 && r.Backend() != "" && (want == "" || r.Backend() == want) {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("status %d: %.200s", r.Status, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if want == "" {
		want = "a backend"
	}
	t.Fatalf("GET with %v not answered 200 by %s within %v: %s", headers, want, timeout, last)
}

// bucket is the spec's percentage bucket of key: the first 8 bytes of
// SHA-256(salt + ":" + key), big-endian, modulo 10000.
func bucket(salt, key string) uint64 {
	sum := sha256.Sum256([]byte(salt + ":" + key))
	return binary.BigEndian.Uint64(sum[:8]) % 10000
}

func inPercent(salt, key string, percent float64) bool {
	return bucket(salt, key) < uint64(percent*100)
}

// expectedCanary lists the users a percentage rule puts in the canary.
func expectedCanary(users []string, salt string, percent float64) string {
	var in []string
	for _, u := range users {
		if inPercent(salt, u, percent) {
			in = append(in, u)
		}
	}
	return strings.Join(in, ",")
}

func sameSplit(users []string, salt1, salt2 string, percent float64) bool {
	return expectedCanary(users, salt1, percent) == expectedCanary(users, salt2, percent)
}

// firstUser returns the first user that is (or is not) in the percentage.
func firstUser(t *testing.T, users []string, salt string, percent float64, in bool) string {
	t.Helper()
	for _, u := range users {
		if inPercent(salt, u, percent) == in {
			return u
		}
	}
	t.Fatalf("no test user with inPercent %v", in)
	return ""
}

// canaryUsers asks for every user through the demo route and lists those the canary served.
func canaryUsers(t *testing.T, base string, users []string) string {
	t.Helper()
	var in []string
	for _, u := range users {
		r := harness.Do(t, "GET", base+"/", map[string]string{"Host": demoHost, "X-User-Id": u}, nil)
		if r.Status != 200 {
			t.Fatalf("user %s: status %d: %s", u, r.Status, r.Body)
		}
		if r.Backend() == "canary" {
			in = append(in, u)
		}
	}
	return strings.Join(in, ",")
}

// waitCanary waits until the canary serves exactly the users of want.
func waitCanary(t *testing.T, base string, users []string, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := canaryUsers(t, base, users)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("canary users after %v:\n got  %s\n want %s", timeout, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
