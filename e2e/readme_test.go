package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mitchellh/mapstructure"
	"github.com/traefik/paerser/file"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/config/label"
	"github.com/traefik/traefik/v3/pkg/config/static"
	traefikscheme "github.com/traefik/traefik/v3/pkg/provider/kubernetes/crd/generated/clientset/versioned/scheme"
	traefikv1alpha1 "github.com/traefik/traefik/v3/pkg/provider/kubernetes/crd/traefikio/v1alpha1"
	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/graylane/graylane"
	"github.com/graylane/graylane/dispatch"
	"github.com/graylane/graylane/e2e/harness"
	"github.com/graylane/graylane/mark"
)

// readmeBlocks returns the fenced blocks of README.md that follow a `<!-- KIND: NAME -->`
// marker, by NAME.
func readmeBlocks(t *testing.T, kind string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- " + kind + ": ([a-z-]+) -->\\s*```[a-z]*\\n(.*?)```")
	blocks := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		blocks[m[1]] = m[2]
	}
	return blocks
}

// recipeConfig turns README recipes into one dynamic configuration: each recipe's middlewares
// are renamed after it, its example addresses point at the test backends, and a router
// (rule Host(`<recipe>.test`) unless rule is set) goes through its middlewares to the service
// stable, whose server is stableURL.
func recipeConfig(t *testing.T, blocks map[string]string, names []string, backends map[string]*harness.Backend, rule, stableURL string) string {
	t.Helper()
	config := map[string]any{}
	routers := map[string]any{}
	for _, name := range names {
		block, ok := blocks[name]
		if !ok {
			t.Fatalf("README.md has no recipe %q", name)
		}
		block = strings.NewReplacer(
			"    gray-mark:", "    "+name+"-mark:",
			"    gray-dispatch:", "    "+name+"-dispatch:",
			"    gray:", "    "+name+"-gray:",
			"http://127.0.0.1:9101", backends["stable"].URL,
			"http://127.0.0.1:9102", backends["canary"].URL,
			"http://10.0.0.5:8080", backends["canary"].URL,
			"http://127.0.0.1:9103", backends["beta"].URL,
		).Replace(block)
		if err := harness.MergeYAML(config, block); err != nil {
			t.Fatalf("recipe %s: %v", name, err)
		}
		var middlewares []string
		for _, suffix := range []string{"-gray", "-mark", "-dispatch"} {
			if strings.Contains(block, "    "+name+suffix+":") {
				middlewares = append(middlewares, name+suffix)
			}
		}
		routerRule := rule
		if routerRule == "" {
			routerRule = "Host(`" + name + ".test`)"
		}
		routers[name] = map[string]any{
			"rule":        routerRule,
			"entryPoints": []string{"web"},
			"service":     "stable",
			"middlewares": middlewares,
		}
	}
	if err := harness.MergeYAML(config, `
http:
  services:
    stable:
      loadBalancer:
        servers: [{url: "`+stableURL+`"}]
`); err != nil {
		t.Fatal(err)
	}
	config["http"].(map[string]any)["routers"] = routers
	out, err := yaml.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

type recipeCase struct {
	recipe  string
	path    string
	headers map[string]string
	want    string
}

func runRecipeCases(t *testing.T, url string, cases []recipeCase) {
	t.Helper()
	for _, c := range cases {
		headers := map[string]string{"Host": c.recipe + ".test"}
		for k, v := range c.headers {
			headers[k] = v
		}
		reply := harness.Do(t, "GET", url+c.path, headers, nil)
		if reply.Status != 200 || reply.Backend() != c.want {
			t.Errorf("recipe %s: GET %s %v → %d %q, want %s", c.recipe, c.path, c.headers, reply.Status, reply.Backend(), c.want)
		}
	}
}

// TestReadmeRecipes runs every single-gateway recipe of the README in a real Traefik.
func TestReadmeRecipes(t *testing.T) {
	blocks := readmeBlocks(t, "recipe")
	backends := map[string]*harness.Backend{}
	for _, name := range []string{"stable", "canary", "beta"} {
		backends[name] = harness.StartBackend(t, name)
	}
	recipes := []string{"testers", "versions", "ramp", "exclude", "keyword", "office", "example", "catalog"}
	plugins := harness.DefaultLocalPlugins()
	plugins["graylane"] = "github.com/graylane/graylane" // the catalog plugin, loaded locally
	traefik := harness.StartTraefik(t, harness.TraefikOptions{
		Dynamic:      recipeConfig(t, blocks, recipes, backends, "", backends["stable"].URL),
		LocalPlugins: plugins,
		// The office recipe's entry point, with the test client as its load balancer.
		ExtraStatic: `entryPoints: {web: {forwardedHeaders: {trustedIPs: ["127.0.0.1/32"]}}}`,
	})
	for _, name := range recipes {
		traefik.WaitRouter(t, name+"@file", 60*time.Second)
	}

	runRecipeCases(t, traefik.URL, []recipeCase{
		{"testers", "/", map[string]string{"X-User-Id": "1001"}, "canary"},
		{"testers", "/", map[string]string{"Cookie": "uid=1003"}, "canary"},
		{"testers", "/", map[string]string{"X-User-Id": "2002"}, "stable"},
		{"testers", "/", map[string]string{"X-User-Id": "2002", "X-Gray-Lane": "canary"}, "stable"},
		{"versions", "/", map[string]string{"X-App-Version": "2.4.1"}, "canary"},
		{"versions", "/?appVersion=3.1.7", nil, "canary"},
		{"versions", "/", map[string]string{"X-App-Version": "v2.3"}, "canary"},
		{"versions", "/", map[string]string{"X-App-Version": "3.0.0"}, "stable"},
		{"versions", "/", map[string]string{"X-App-Version": "2.3.0-rc.1"}, "stable"},
		{"versions", "/", map[string]string{"X-App-Version": "not-a-version"}, "stable"},
		{"versions", "/", nil, "stable"},
		{"exclude", "/", map[string]string{"X-User-Id": "globex-admin"}, "stable"},
		{"exclude", "/", map[string]string{"X-User-Id": "acme-admin"}, "stable"},
		{"exclude", "/", map[string]string{"X-User-Id": "3001"}, "canary"},
		{"keyword", "/shop/beta/cart", nil, "beta"},
		{"keyword", "/preview", nil, "beta"},
		{"keyword", "/shop", nil, "stable"},
		{"office", "/", map[string]string{"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}, "canary"},
		{"office", "/", map[string]string{"X-Forwarded-For": "203.0.113.7, 198.51.100.9"}, "stable"},
		{"office", "/", map[string]string{"X-Forwarded-For": "2001:db8:1:5::9"}, "canary"},
		{"office", "/", nil, "stable"},
		{"example", "/", map[string]string{"X-User-Id": "1001"}, "canary"},
		{"example", "/beta/page", nil, "canary"},
		{"example", "/", map[string]string{"X-User-Id": "7"}, "stable"},
		{"catalog", "/", map[string]string{"X-User-Id": "1002"}, "canary"},
		{"catalog", "/", map[string]string{"X-User-Id": "7", "X-Gray-Lane": "canary"}, "stable"},
	})

	// The exclusion above is shown by a user whose bucket is in the 20 % (3001 is too).
	if bucket("canary-20", "globex-admin") >= 2000 || bucket("canary-20", "3001") >= 2000 {
		t.Errorf("exclude: the test users are not in the 20 %% buckets: globex-admin %d, 3001 %d", bucket("canary-20", "globex-admin"), bucket("canary-20", "3001"))
	}

	// The ramp stands at its second step (20 %) until 2099: each user is where the formula says.
	inCanary := 0
	for i := 0; i < 300; i++ {
		user := "user-" + strconv.Itoa(i)
		want := "stable"
		if bucket("checkout-v2", user) < 2000 {
			want = "canary"
			inCanary++
		}
		runRecipeCases(t, traefik.URL, []recipeCase{{"ramp", "/", map[string]string{"X-User-Id": user}, want}})
	}
	if inCanary < 30 || inCanary > 90 {
		t.Errorf("%d of 300 users in the 20 %% canary", inCanary)
	}

	// An anonymous visitor gets a sticky ID and keeps its lane with it.
	first := harness.Do(t, "GET", traefik.URL+"/", map[string]string{"Host": "ramp.test"}, nil)
	cookie := ""
	for _, c := range first.Header.Values("Set-Cookie") {
		if strings.HasPrefix(c, "graylane_id=") {
			cookie = strings.SplitN(c, ";", 2)[0]
		}
	}
	if cookie == "" {
		t.Fatalf("ramp: an anonymous visitor got no graylane_id cookie: %v", first.Header)
	}
	for i := 0; i < 5; i++ {
		again := harness.Do(t, "GET", traefik.URL+"/", map[string]string{"Host": "ramp.test", "Cookie": cookie}, nil)
		if again.Backend() != first.Backend() {
			t.Fatalf("ramp: anonymous visitor with %s moved from %s to %s", cookie, first.Backend(), again.Backend())
		}
	}
}

// TestReadmeTwoGateways runs the edge and inner gateway recipes in two Traefik processes.
func TestReadmeTwoGateways(t *testing.T) {
	blocks := readmeBlocks(t, "recipe")
	backends := map[string]*harness.Backend{}
	for _, name := range []string{"stable", "canary", "beta"} {
		backends[name] = harness.StartBackend(t, name)
	}
	all := "PathPrefix(`/`)"
	inner := harness.StartTraefik(t, harness.TraefikOptions{Dynamic: recipeConfig(t, blocks, []string{"inner"}, backends, all, backends["stable"].URL)})
	inner.WaitRouter(t, "inner@file", 60*time.Second)
	// The edge's own service is the inner gateway.
	edge := harness.StartTraefik(t, harness.TraefikOptions{Dynamic: recipeConfig(t, blocks, []string{"edge"}, backends, all, inner.URL)})
	edge.WaitRouter(t, "edge@file", 60*time.Second)

	cases := []struct {
		headers map[string]string
		want    string
	}{
		{map[string]string{"X-User-Id": "1001"}, "canary"},
		{map[string]string{"X-User-Id": "2002"}, "stable"},
		{map[string]string{"X-User-Id": "2002", "X-Gray-Lane": "canary"}, "stable"},
	}
	for _, c := range cases {
		reply := harness.Do(t, "GET", edge.URL+"/", c.headers, nil)
		if reply.Status != 200 || reply.Backend() != c.want {
			t.Errorf("edge → inner %v: %d %q, want %s", c.headers, reply.Status, reply.Backend(), c.want)
		}
	}
}

// TestReadmeStaticConfig checks every static configuration block of the README (a YAML block
// whose first line says "static configuration") with Traefik's own decoder of the static
// configuration, which refuses a key Traefik does not know, and that the local plugins it
// declares are those the end-to-end tests declare.
func TestReadmeStaticConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\\n(# [^\\n]*static configuration[^\\n]*\\n.*?)```").FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 3 {
		t.Fatalf("README.md has %d static configuration blocks, want the local plugins', the catalog's and the office's", len(blocks))
	}
	var plugins, localPlugins int
	for _, block := range blocks {
		var conf static.Configuration
		if err := file.DecodeContent(block[1], ".yaml", &conf); err != nil {
			t.Errorf("static configuration block %q: %v", strings.SplitN(block[1], "\n", 2)[0], err)
			continue
		}
		if conf.Experimental == nil {
			continue
		}
		plugins += len(conf.Experimental.Plugins)
		if len(conf.Experimental.LocalPlugins) == 0 {
			continue
		}
		localPlugins++
		got := map[string]string{}
		for alias, p := range conf.Experimental.LocalPlugins {
			got[alias] = p.ModuleName
		}
		if !reflect.DeepEqual(got, harness.DefaultLocalPlugins()) {
			t.Errorf("README declares %v, the tests %v", got, harness.DefaultLocalPlugins())
		}
	}
	if plugins != 1 || localPlugins != 1 {
		t.Errorf("%d catalog plugins and %d local plugin blocks, want the catalog's graylane and one localPlugins block", plugins, localPlugins)
	}
}

// readmeSyntaxNames are the blocks of the README's "same configuration in every syntax"
// section, marked `<!-- syntax: NAME -->`: one configuration written in the four syntaxes
// Traefik reads plugin configuration from. The first, yaml, is the one the others must match.
var readmeSyntaxNames = []string{"yaml", "toml", "labels", "crd"}

// readmeSecrets are the Secrets of the namespace the README's Middleware resources are applied
// in, by name then key. Traefik's kubernetesCRD provider replaces a plugin option written
// urn:k8s:secret:<secret>:<key> with that key's value before the plugin decodes it
// (createPluginMiddleware → loadSecretKeys); readmeCRDConfiguration does the same with these.
// The crd block's comment says its salt may come from a Secret: this one holds the salt the
// other blocks write in clear, so either spelling gives the same configuration.
var readmeSecrets = map[string]map[string]string{
	"graylane-salt": {"checkout": "checkout-v2"},
}

// pluginBuilder builds a plugin middleware from the raw configuration Traefik hands the
// plugin, and returns the decoded Config.
type pluginBuilder func(raw map[string]any, middleware string) (config any, err error)

// buildLikeTraefik is the pluginBuilder of a plugin with these CreateConfig and New: it
// decodes raw as Traefik's Yaegi middleware builder does (pkg/plugins/middlewareyaegi.go,
// createConfig: onto the result of CreateConfig, left as is when raw is empty, with
// mapstructure, weakly typed, comma strings into slices), then calls New, which must succeed.
// It also fails on a key the Config has no field for: Traefik ignores it silently, so a
// misspelt key in every block would otherwise pass.
func buildLikeTraefik[C any](createConfig func() *C, newMiddleware func(context.Context, http.Handler, *C, string) (http.Handler, error)) pluginBuilder {
	return func(raw map[string]any, middleware string) (any, error) {
		config := createConfig()
		if len(raw) > 0 {
			var meta mapstructure.Metadata
			dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
				DecodeHook:       mapstructure.StringToSliceHookFunc(","),
				WeaklyTypedInput: true,
				Result:           config,
				Metadata:         &meta,
			})
			if err != nil {
				return nil, err
			}
			if err := dec.Decode(raw); err != nil {
				return nil, fmt.Errorf("failed to decode configuration: %w", err)
			}
			if len(meta.Unused) > 0 {
				sort.Strings(meta.Unused)
				return nil, fmt.Errorf("unknown keys, which Traefik would ignore: %s", strings.Join(meta.Unused, ", "))
			}
		}
		if _, err := newMiddleware(context.Background(), http.NotFoundHandler(), config, middleware); err != nil {
			return nil, fmt.Errorf("New: %w", err)
		}
		return config, nil
	}
}

// readmePlugins are the plugins the README's examples use, by their name in Traefik's static
// configuration (the tests' localPlugins aliases).
var readmePlugins = map[string]pluginBuilder{
	"graylane-mark":     buildLikeTraefik(mark.CreateConfig, mark.New),
	"graylane-dispatch": buildLikeTraefik(dispatch.CreateConfig, dispatch.New),
	"graylane":          buildLikeTraefik(graylane.CreateConfig, graylane.New),
}

// readmeDynamic decodes one syntax block into Traefik's dynamic configuration the way the
// provider that reads that syntax does.
func readmeDynamic(syntax, block string, secrets map[string]map[string]string) (*dynamic.Configuration, error) {
	switch syntax {
	case "yaml", "toml":
		// The file provider (pkg/provider/file: loadFileConfig).
		conf := newDynamic()
		if err := file.DecodeContent(block, "."+syntax, conf); err != nil {
			return nil, err
		}
		return conf, nil
	case "labels":
		// The Docker, Swarm, … providers (label.DecodeConfiguration) get the labels as a map.
		labels := map[string]string{}
		for _, line := range strings.Split(block, "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, `- "`) {
				continue
			}
			k, v, ok := strings.Cut(strings.Trim(strings.TrimPrefix(line, "- "), `"`), "=")
			if !ok {
				return nil, fmt.Errorf("label %s: no =", line)
			}
			labels[k] = v
		}
		return label.DecodeConfiguration(labels)
	case "crd":
		return readmeCRDConfiguration(block, secrets)
	}
	return nil, fmt.Errorf("no decoder for the syntax %q", syntax)
}

// readmeCRDConfiguration decodes Kubernetes Middleware resources the way they reach Traefik's
// kubernetesCRD provider: each YAML document (split as kubectl does) is decoded, strictly as
// kubectl apply's default field validation would, with the scheme of Traefik's generated
// clientset, and must be a traefik.io/v1alpha1 Middleware. Its spec.plugin then goes through
// createPluginMiddleware's steps (pkg/provider/kubernetes/crd/kubernetes.go): marshalled to
// JSON and unmarshalled into dynamic.PluginConf maps, so numbers are float64, and
// urn:k8s:secret:<secret>:<key> strings are replaced from secrets (loadSecretKeys). The
// middleware keeps its metadata.name (Traefik prefixes the namespace).
func readmeCRDConfiguration(content string, secrets map[string]map[string]string) (*dynamic.Configuration, error) {
	deserializer := serializer.NewCodecFactory(traefikscheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	conf := newDynamic()
	docs := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(content)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		// The kind first: a strict decoding error comes with the decoded object and its kind.
		obj, gvk, err := deserializer.Decode(doc, nil, nil)
		if want := traefikv1alpha1.SchemeGroupVersion.WithKind("Middleware"); gvk != nil && *gvk != want {
			return nil, fmt.Errorf("%s, want %s", gvk, want)
		}
		if err != nil {
			return nil, err
		}
		middleware, ok := obj.(*traefikv1alpha1.Middleware)
		if !ok {
			return nil, fmt.Errorf("decoded a %T, want a Middleware", obj)
		}
		if middleware.Name == "" {
			return nil, errors.New("a Middleware has no metadata.name")
		}
		if middleware.Spec.Plugin == nil {
			return nil, fmt.Errorf("middleware %s: no spec.plugin", middleware.Name)
		}
		data, err := json.Marshal(middleware.Spec.Plugin)
		if err != nil {
			return nil, err
		}
		plugins := map[string]dynamic.PluginConf{}
		if err := json.Unmarshal(data, &plugins); err != nil {
			return nil, err
		}
		for _, pc := range plugins {
			for key := range pc {
				if pc[key], err = resolveSecrets(pc[key], secrets); err != nil {
					return nil, fmt.Errorf("middleware %s: %w", middleware.Name, err)
				}
			}
		}
		conf.HTTP.Middlewares[middleware.Name] = &dynamic.Middleware{Plugin: plugins}
	}
	return conf, nil
}

// resolveSecrets replaces the urn:k8s:secret:<secret>:<key> strings of a plugin option with the
// key's value in secrets, as Traefik's loadSecretKeys does with the namespace's Secrets.
func resolveSecrets(v any, secrets map[string]map[string]string) (any, error) {
	var err error
	switch v := v.(type) {
	case string:
		if !strings.HasPrefix(v, "urn:k8s:secret:") {
			return v, nil
		}
		parts := strings.Split(v, ":")
		if len(parts) != 5 {
			return nil, fmt.Errorf("malformed secret URN %q", v)
		}
		secret, ok := secrets[parts[3]]
		if !ok {
			return nil, fmt.Errorf("secret %s is not found", parts[3])
		}
		value, ok := secret[parts[4]]
		if !ok {
			return nil, fmt.Errorf("key %q not found in secret %s", parts[4], parts[3])
		}
		return value, nil
	case []any:
		for i := range v {
			if v[i], err = resolveSecrets(v[i], secrets); err != nil {
				return nil, err
			}
		}
	case map[string]any:
		for k := range v {
			if v[k], err = resolveSecrets(v[k], secrets); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}

// readmePluginConfigs builds every middleware of conf as Traefik's middleware builder does (one
// plugin per middleware: pkg/server/middleware/plugins.go, findPluginConfig) and returns the
// decoded Configs by "middleware/plugin".
func readmePluginConfigs(conf *dynamic.Configuration) (map[string]any, error) {
	if conf.HTTP == nil || len(conf.HTTP.Middlewares) == 0 {
		return nil, errors.New("no middlewares")
	}
	configs := map[string]any{}
	for name, m := range conf.HTTP.Middlewares {
		if len(m.Plugin) != 1 {
			return nil, fmt.Errorf("middleware %s: %d plugins, want 1", name, len(m.Plugin))
		}
		for alias, raw := range m.Plugin {
			build, ok := readmePlugins[alias]
			if !ok {
				return nil, fmt.Errorf("middleware %s: unknown plugin %q", name, alias)
			}
			config, err := build(raw, name)
			if err != nil {
				return nil, fmt.Errorf("middleware %s, plugin %s: %w", name, alias, err)
			}
			configs[name+"/"+alias] = config
		}
	}
	return configs, nil
}

// readmeSyntaxes decodes each syntax block as Traefik would (readmeDynamic), builds its plugin
// middlewares with their New (readmePluginConfigs), and checks every syntax gives the YAML
// block's middlewares and Configs. It returns the YAML block's Configs.
func readmeSyntaxes(blocks map[string]string, secrets map[string]map[string]string) (map[string]any, error) {
	for syntax := range blocks {
		if !slices.Contains(readmeSyntaxNames, syntax) {
			return nil, fmt.Errorf("README.md has a <!-- syntax: %s --> block the test does not decode", syntax)
		}
	}
	got := map[string]map[string]any{}
	for _, syntax := range readmeSyntaxNames {
		block, ok := blocks[syntax]
		if !ok {
			return nil, fmt.Errorf("README.md has no <!-- syntax: %s --> block", syntax)
		}
		conf, err := readmeDynamic(syntax, block, secrets)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", syntax, err)
		}
		if got[syntax], err = readmePluginConfigs(conf); err != nil {
			return nil, fmt.Errorf("%s: %w", syntax, err)
		}
	}
	var errs []error
	want := got["yaml"]
	for _, syntax := range readmeSyntaxNames[1:] {
		keys := slices.Sorted(maps.Keys(want))
		for key := range got[syntax] {
			if _, ok := want[key]; !ok {
				keys = append(keys, key)
			}
		}
		for _, key := range keys {
			if !reflect.DeepEqual(got[syntax][key], want[key]) {
				errs = append(errs, fmt.Errorf("%s %s differs from yaml\n got %+v\nyaml %+v", syntax, key, got[syntax][key], want[key]))
			}
		}
	}
	return want, errors.Join(errs...)
}

// TestReadmeSyntaxes decodes the README's one configuration written as YAML, TOML, labels and
// Kubernetes Middleware resources as Traefik's providers and plugin builder do, builds every
// middleware with its plugin's New, and checks all four give the same Configs.
func TestReadmeSyntaxes(t *testing.T) {
	got, err := readmeSyntaxes(readmeBlocks(t, "syntax"), readmeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := got["gray-mark/graylane-mark"].(*mark.Config)
	if !ok {
		t.Fatalf("no gray-mark middleware with the graylane-mark plugin: %v", got)
	}
	if n := len(m.Rules); n != 2 || m.Rules[1].Percent == nil || *m.Rules[1].Percent != 10 {
		t.Errorf("yaml: rules decoded as %+v", m.Rules)
	}
	if _, ok := got["gray-dispatch/graylane-dispatch"].(*dispatch.Config); !ok {
		t.Fatalf("no gray-dispatch middleware with the graylane-dispatch plugin: %v", got)
	}
}

// TestReadmeReference decodes the configuration examples of the README's reference sections
// (marked <!-- reference: NAME -->) as the file provider and Traefik's plugin builder do, and
// builds every middleware in them with its plugin's New.
func TestReadmeReference(t *testing.T) {
	blocks := readmeBlocks(t, "reference")
	if len(blocks) == 0 {
		t.Fatal("README.md has no <!-- reference: NAME --> block")
	}
	for name, block := range blocks {
		conf, err := readmeDynamic("yaml", block, nil)
		if err != nil {
			t.Fatalf("reference %s: %v", name, err)
		}
		configs, err := readmePluginConfigs(conf)
		if err != nil || len(configs) == 0 {
			t.Errorf("reference %s: %d middlewares built, error %v", name, len(configs), err)
		}
	}
}

// TestReadmeSyntaxesBroken checks that TestReadmeSyntaxes notices a mistake in one block: each
// case edits a copy of one README block (the first occurrence of old becomes new) and expects
// readmeSyntaxes to fail with wantErr, or to succeed when wantErr is empty.
func TestReadmeSyntaxesBroken(t *testing.T) {
	blocks := readmeBlocks(t, "syntax")
	cases := []struct {
		name, syntax, old, new, wantErr string
	}{
		{"Traefik v2 API group", "crd", "apiVersion: traefik.io/v1alpha1", "apiVersion: traefik.containo.us/v1alpha1", `no kind "Middleware" is registered for version "traefik.containo.us/v1alpha1"`},
		{"not a Middleware", "crd", "kind: Middleware", "kind: MiddlewareTCP", "want traefik.io/v1alpha1, Kind=Middleware"},
		{"misspelt spec field", "crd", "  plugin:", "  plugins:", `unknown field "spec.plugins"`},
		{"misspelt plugin option", "crd", "users:", "user:", "unknown keys, which Traefik would ignore: Rules[0].user"},
		{"value of the wrong type", "crd", "weight: 3", "weight: three", "failed to decode configuration"},
		{"value New rejects", "crd", "lane: canary", `lane: "Canary!"`, "New: rules[0].lane"},
		{"salt from a Secret", "crd", "salt: checkout-v2", "salt: urn:k8s:secret:graylane-salt:checkout", ""},
		{"missing Secret key", "crd", "salt: checkout-v2", "salt: urn:k8s:secret:graylane-salt:other", `key "other" not found in secret graylane-salt`},
		{"different value", "toml", "percent = 10", "percent = 20", "toml gray-mark/graylane-mark differs from yaml"},
		{"misspelt label", "labels", "rules[1].percent=10", "rules[1].precent=10", "unknown keys, which Traefik would ignore: Rules[1].precent"},
		{"unknown plugin", "yaml", "graylane-dispatch:", "graylane-dispatcher:", `unknown plugin "graylane-dispatcher"`},
		{"middleware renamed", "yaml", "    gray-dispatch:", "    gray-dispatcher:", "toml gray-dispatch/graylane-dispatch differs from yaml"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			broken := maps.Clone(blocks)
			if !strings.Contains(broken[c.syntax], c.old) {
				t.Fatalf("the README's %s block has no %q any more: update the case", c.syntax, c.old)
			}
			broken[c.syntax] = strings.Replace(broken[c.syntax], c.old, c.new, 1)
			_, err := readmeSyntaxes(broken, readmeSecrets)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("want no error, got %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("want an error with %q, got %v", c.wantErr, err)
			}
		})
	}
}

// TestReadmeObservability runs the README's access log configuration in a real Traefik and
// checks what the README says a lane request and a stable one leave in the access log and in the
// Prometheus metrics.
func TestReadmeObservability(t *testing.T) {
	static := map[string]any{}
	if err := yaml.Unmarshal([]byte(readmeBlocks(t, "static")["observability"]), &static); err != nil {
		t.Fatalf("README static block observability: %v", err)
	}
	accessLog, ok := static["accessLog"].(map[string]any)
	if !ok {
		t.Fatal("README static block observability has no accessLog")
	}
	logFile := filepath.Join(t.TempDir(), "access.log")
	accessLog["filePath"] = logFile
	static["metrics"] = map[string]any{"prometheus": map[string]any{"addRoutersLabels": true}}
	extra, err := yaml.Marshal(static)
	if err != nil {
		t.Fatal(err)
	}
	stable, canary := harness.StartBackend(t, "stable"), harness.StartBackend(t, "canary")
	tr := harness.StartTraefik(t, harness.TraefikOptions{ExtraStatic: string(extra), Dynamic: strings.NewReplacer(
		"{{stable}}", stable.URL, "{{canary}}", canary.URL).Replace(`
http:
  routers:
    app:
      rule: PathPrefix(` + "`/`" + `)
      entryPoints: [web]
      service: stable
      middlewares: [gray-mark, gray-dispatch]
  services:
    stable:
      loadBalancer:
        servers: [{url: "{{stable}}"}]
  middlewares:
    gray-mark:
      plugin:
        graylane-mark:
          identity: {header: X-User-Id}
          ruleHeader: X-Gray-Rule
          rules: [{name: testers, lane: canary, users: ["1001"]}]
    gray-dispatch:
      plugin:
        graylane-dispatch:
          servedByHeader: X-Gray-Upstream
          lanes: {canary: {servers: [{url: "{{canary}}"}]}}
`)})
	tr.WaitRouter(t, "app", 60*time.Second)
	for _, user := range []string{"1001", "2002"} {
		if r := harness.Do(t, "GET", tr.URL+"/", map[string]string{"X-User-Id": user}, nil); r.Status != http.StatusOK {
			t.Fatalf("user %s: status %d", user, r.Status)
		}
	}

	// Traefik writes access log lines asynchronously; wait for both.
	var lines []map[string]any
	for deadline := time.Now().Add(10 * time.Second); len(lines) < 2 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		data, _ := os.ReadFile(logFile)
		lines = nil
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			entry := map[string]any{}
			if json.Unmarshal([]byte(line), &entry) == nil {
				lines = append(lines, entry)
			}
		}
	}
	if len(lines) != 2 {
		t.Fatalf("access log has %d lines, want 2", len(lines))
	}
	lane, stableLine := lines[0], lines[1]
	if lane["request_X-Gray-Lane"] != "canary" || lane["downstream_X-Gray-Upstream"] != "canary "+canary.URL ||
		lane["downstream_X-Gray-Rule"] != "testers" || lane["RouterName"] != "app@file" ||
		lane["ServiceName"] != nil || lane["ServiceURL"] != nil || lane["OriginStatus"] != float64(0) ||
		lane["Overhead"] != lane["Duration"] {
		t.Errorf("access log of the lane request: %v", lane)
	}
	if stableLine["request_X-Gray-Lane"] != nil || stableLine["ServiceName"] != "stable@file" {
		t.Errorf("access log of the stable request: %v", stableLine)
	}

	resp, err := harness.Client.Get(tr.APIURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`traefik_entrypoint_requests_total{code="200",entrypoint="web",method="GET",protocol="http"} 2`,
		`traefik_router_requests_total{code="200",method="GET",protocol="http",router="app@file",service="stable@file"} 2`,
		`traefik_service_requests_total{code="200",method="GET",protocol="http",service="stable@file"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("metrics have no line %s", want)
		}
	}
}
