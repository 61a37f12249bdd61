package e2e_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/traefik/paerser/file"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/config/label"
	"gopkg.in/yaml.v3"

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
	recipes := []string{"testers", "versions", "ramp", "keyword", "example", "catalog"}
	plugins := harness.DefaultLocalPlugins()
	plugins["graylane"] = "github.com/graylane/graylane" // the catalog plugin, loaded locally
	traefik := harness.StartTraefik(t, harness.TraefikOptions{
		Dynamic:      recipeConfig(t, blocks, recipes, backends, "", backends["stable"].URL),
		LocalPlugins: plugins,
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
		{"keyword", "/shop/beta/cart", nil, "beta"},
		{"keyword", "/preview", nil, "beta"},
		{"keyword", "/shop", nil, "stable"},
		{"example", "/", map[string]string{"X-User-Id": "1001"}, "canary"},
		{"example", "/beta/page", nil, "canary"},
		{"example", "/", map[string]string{"X-User-Id": "7"}, "stable"},
		{"catalog", "/", map[string]string{"X-User-Id": "1002"}, "canary"},
		{"catalog", "/", map[string]string{"X-User-Id": "7", "X-Gray-Lane": "canary"}, "stable"},
	})

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

// TestReadmeStaticConfig checks that the README's static configuration declares the plugins
// the way the end-to-end tests do.
func TestReadmeStaticConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\\n(# traefik.yml \\(static configuration\\).*?)```").FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("README.md has no static configuration block")
	}
	var static struct {
		Experimental struct {
			LocalPlugins map[string]struct {
				ModuleName string `yaml:"moduleName"`
			} `yaml:"localPlugins"`
		} `yaml:"experimental"`
	}
	if err := yaml.Unmarshal([]byte(m[1]), &static); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for alias, p := range static.Experimental.LocalPlugins {
		got[alias] = p.ModuleName
	}
	if !reflect.DeepEqual(got, harness.DefaultLocalPlugins()) {
		t.Fatalf("README declares %v, the tests %v", got, harness.DefaultLocalPlugins())
	}
}

// TestReadmeSyntaxes decodes the README's one configuration written as YAML, TOML, labels and
// Kubernetes Middleware resources with Traefik's decoders, and checks all four agree.
func TestReadmeSyntaxes(t *testing.T) {
	blocks := readmeBlocks(t, "syntax")
	type plugins struct {
		mark     *mark.Config
		dispatch *dispatch.Config
	}
	fromDynamic := func(conf *dynamic.Configuration) plugins {
		p := plugins{mark: mark.CreateConfig(), dispatch: dispatch.CreateConfig()}
		decodeLikeTraefik(t, pluginConf(t, conf, "gray-mark", "graylane-mark"), p.mark)
		decodeLikeTraefik(t, pluginConf(t, conf, "gray-dispatch", "graylane-dispatch"), p.dispatch)
		return p
	}
	got := map[string]plugins{}
	for _, syntax := range []string{"yaml", "toml"} {
		conf := newDynamic()
		if err := file.DecodeContent(blocks[syntax], "."+syntax, conf); err != nil {
			t.Fatalf("%s: %v", syntax, err)
		}
		got[syntax] = fromDynamic(conf)
	}

	labels := map[string]string{}
	for _, line := range strings.Split(blocks["labels"], "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, `- "`) {
			continue
		}
		kv := strings.SplitN(strings.Trim(strings.TrimPrefix(line, "- "), `"`), "=", 2)
		labels[kv[0]] = kv[1]
	}
	conf, err := label.DecodeConfiguration(labels)
	if err != nil {
		t.Fatalf("labels: %v", err)
	}
	got["labels"] = fromDynamic(conf)

	crd := newDynamic()
	for _, doc := range strings.Split(blocks["crd"], "\n---\n") {
		var m struct {
			Metadata struct{ Name string }
			Spec     struct{ Plugin map[string]map[string]any }
		}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("crd: %v", err)
		}
		crd.HTTP.Middlewares[m.Metadata.Name] = &dynamic.Middleware{Plugin: map[string]dynamic.PluginConf{}}
		for alias, raw := range m.Spec.Plugin {
			crd.HTTP.Middlewares[m.Metadata.Name].Plugin[alias] = raw
		}
	}
	got["crd"] = fromDynamic(crd)

	for _, syntax := range []string{"toml", "labels", "crd"} {
		if !reflect.DeepEqual(got[syntax].mark, got["yaml"].mark) {
			t.Errorf("%s mark\n got %+v\nyaml %+v", syntax, *got[syntax].mark, *got["yaml"].mark)
		}
		if !reflect.DeepEqual(got[syntax].dispatch, got["yaml"].dispatch) {
			t.Errorf("%s dispatch\n got %+v\nyaml %+v", syntax, *got[syntax].dispatch, *got["yaml"].dispatch)
		}
	}
	if n := len(got["yaml"].mark.Rules); n != 2 || got["yaml"].mark.Rules[1].Percent == nil || *got["yaml"].mark.Rules[1].Percent != 10 {
		t.Errorf("yaml: rules decoded as %+v", got["yaml"].mark.Rules)
	}
}
