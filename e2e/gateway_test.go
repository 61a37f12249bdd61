package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/graylane/graylane/e2e/harness"
	"github.com/graylane/graylane/e2e/kube"
)

// gatewayHost is the host of the HTTPRoute of demo/gateway/gateway.yaml.
const gatewayHost = "gw.example.com"

// gatewayListenerPort is the listener port of demo/gateway/gateway.yaml (the Helm chart's web
// entry point port), which the test replaces with the port of Traefik's web entry point.
const gatewayListenerPort = "port: 8000\n"

// The names Traefik gives the demo Middlewares when an ExtensionRef filter names them: the
// kubernetesCRD provider's routers' names for them (<namespace>-<name>@kubernetescrd).
const (
	markMiddleware     = "graylane-demo-gray-mark@kubernetescrd"
	dispatchMiddleware = "graylane-demo-gray-dispatch@kubernetescrd"
)

// TestKubernetesGateway runs graylane behind the Kubernetes Gateway API: the same cluster and
// demo Middlewares as TestKubernetesCRD, the standard-channel Gateway API CRDs, and the
// GatewayClass, Gateway and HTTPRoute of demo/gateway/gateway.yaml, whose two ExtensionRef
// filters name the graylane Middlewares. Traefik runs the kubernetesGateway provider (which
// builds the HTTPRoute) next to the kubernetesCRD provider (which builds the Middlewares and
// lets ExtensionRef filters name them).
func TestKubernetesGateway(t *testing.T) {
	start := time.Now()
	demo := startDemo(t)
	cluster := demo.cluster
	cluster.InstallGatewayAPICRDs(t)
	crd := cluster.Get(t, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "httproutes.gateway.networking.k8s.io")
	t.Logf("Gateway API CRDs installed (bundle %s)", crd.GetAnnotations()["gateway.networking.k8s.io/bundle-version"])

	traefik := harness.StartTraefik(t, harness.TraefikOptions{ExtraStatic: kubeProviders(cluster, "kubernetesCRD", "kubernetesGateway")})

	// The listener port must be the port of a Traefik entry point: the provider picks the
	// entry point whose address ends in ":<port>".
	u := strings.TrimPrefix(traefik.URL, "http://")
	webPort := u[strings.LastIndex(u, ":")+1:]
	manifests := demoGatewayFile(t)
	if strings.Count(manifests, gatewayListenerPort) != 1 {
		t.Fatalf("demo/gateway/gateway.yaml should hold %q once (the listener port)", gatewayListenerPort)
	}
	cluster.Apply(t, strings.Replace(manifests, gatewayListenerPort, "port: "+webPort+"\n", 1))

	waitBackend(t, traefik.URL, map[string]string{"Host": gatewayHost, "X-User-Id": "probe"}, "", 60*time.Second)
	t.Logf("Traefik serves the HTTPRoute %v after the cluster started", time.Since(start).Round(time.Millisecond))

	users := make([]string, 200)
	for i := range users {
		users[i] = "user-" + strconv.Itoa(i)
	}
	outsider := firstUser(t, users, demo.salt, 10, false)

	t.Run("route status", func(t *testing.T) {
		// Traefik reports the route accepted by the Gateway, with its backend resolved. (Not
		// its ExtensionRef filters: Traefik leaves ResolvedRefs true when it cannot load them;
		// the lanes below show they run.)
		waitRouteConditions(t, cluster, "whoami-gw", 30*time.Second)
	})

	t.Run("lanes", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			headers map[string]string
			want    string
		}{
			{"tester", map[string]string{"X-User-Id": "1001"}, "canary"},
			{"other user", map[string]string{"X-User-Id": outsider}, "stable"},
			{"client lane header stripped", map[string]string{"X-User-Id": outsider, "X-Gray-Lane": "canary"}, "stable"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.headers["Host"] = gatewayHost
				r := harness.Do(t, "GET", traefik.URL+"/", tc.headers, nil)
				if r.Status != 200 || r.Backend() != tc.want {
					t.Fatalf("GET / %v: status %d from %q (X-Gray-Rule %q), want 200 from %q; body %s",
						tc.headers, r.Status, r.Backend(), r.Header.Get("X-Gray-Rule"), tc.want, r.Body)
				}
				if tc.want == "stable" && r.RequestHeader("X-Gray-Lane") != "" {
					t.Errorf("the stable backend received X-Gray-Lane %q: the client's header was not stripped", r.RequestHeader("X-Gray-Lane"))
				}
				if tc.want == "canary" && r.Header.Get("X-Gray-Rule") != "testers" {
					t.Errorf("X-Gray-Rule %q, want testers", r.Header.Get("X-Gray-Rule"))
				}
			})
		}
	})

	t.Run("filter order", func(t *testing.T) {
		// Traefik keeps the filters' order: the router runs gray-mark, then gray-dispatch.
		r := waitGatewayRouter(t, traefik, "whoami-gw", 30*time.Second)
		if want := []string{markMiddleware, dispatchMiddleware}; !slices.Equal(r.Middlewares, want) {
			t.Fatalf("router %s runs the middlewares %q, want %q", r.Name, r.Middlewares, want)
		}
		t.Logf("router %s: middlewares %q, service %s", r.Name, r.Middlewares, r.Service)

		// The order matters, so the lanes above check it too: the same route with the filters
		// swapped dispatches before any lane is decided, so the tester stays on stable, and a
		// lane header sent by the client reaches dispatch before mark strips it.
		const reversedHost = "gw-reversed.example.com"
		reversed := strings.NewReplacer("name: whoami-gw\n", "name: whoami-gw-reversed\n",
			"- "+gatewayHost+"\n", "- "+reversedHost+"\n",
			"name: gray-mark\n", "name: gray-dispatch\n",
			"name: gray-dispatch\n", "name: gray-mark\n").Replace(httpRouteOf(t, manifests))
		cluster.Apply(t, reversed)
		r = waitGatewayRouter(t, traefik, "whoami-gw-reversed", 30*time.Second)
		if want := []string{dispatchMiddleware, markMiddleware}; !slices.Equal(r.Middlewares, want) {
			t.Fatalf("the reversed route's router runs the middlewares %q, want %q", r.Middlewares, want)
		}
		waitBackend(t, traefik.URL, map[string]string{"Host": reversedHost, "X-User-Id": "1001"}, "stable", 30*time.Second)
		waitBackend(t, traefik.URL, map[string]string{"Host": reversedHost, "X-User-Id": outsider, "X-Gray-Lane": "canary"}, "canary", 5*time.Second)
	})
	t.Logf("whole Gateway API test: %v", time.Since(start).Round(time.Millisecond))
}

func demoGatewayFile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "demo", "gateway", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// httpRouteOf returns the one HTTPRoute document of a multi-document YAML text.
func httpRouteOf(t *testing.T, manifests string) string {
	t.Helper()
	var found []string
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if strings.Contains(doc, "\nkind: HTTPRoute\n") {
			found = append(found, doc)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d HTTPRoute documents in demo/gateway/gateway.yaml, want 1", len(found))
	}
	return found[0]
}

// waitRouteConditions waits until the HTTPRoute's status, written by Traefik's Gateway
// controller, has the conditions Accepted and ResolvedRefs true for its parent Gateway.
func waitRouteConditions(t *testing.T, c *kube.Cluster, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		route := c.Get(t, "gateway.networking.k8s.io/v1", "HTTPRoute", "graylane-demo", name)
		parents, _, _ := unstructured.NestedSlice(route.Object, "status", "parents")
		var seen []string
		for _, p := range parents {
			parent, _ := p.(map[string]any)
			if parent["controllerName"] != "traefik.io/gateway-controller" {
				continue
			}
			conds, _ := parent["conditions"].([]any)
			status := map[string]string{}
			for _, c := range conds {
				m, _ := c.(map[string]any)
				typ, _ := m["type"].(string)
				st, _ := m["status"].(string)
				status[typ] = st
				seen = append(seen, fmt.Sprintf("%s=%s (%v)", typ, st, m["message"]))
			}
			if status["Accepted"] == "True" && status["ResolvedRefs"] == "True" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPRoute %s not Accepted and ResolvedRefs after %v; Traefik's conditions: %q", name, timeout, seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitGatewayRouter waits until Traefik's API lists one enabled router of the
// kubernetesGateway provider for the HTTPRoute graylane-demo/<route> and returns it. (Its
// name, httproute-graylane-demo-<route>-gw-…, ends in a hash of the rule.)
func waitGatewayRouter(t *testing.T, traefik *harness.Traefik, route string, timeout time.Duration) harness.Router {
	t.Helper()
	prefix := "httproute-graylane-demo-" + route + "-gw-"
	deadline := time.Now().Add(timeout)
	for {
		var last string
		routers, err := listRouters(traefik)
		if err != nil {
			last = err.Error()
		} else {
			var found []harness.Router
			for _, r := range routers {
				if r.Provider == "kubernetesgateway" && strings.HasPrefix(r.Name, prefix) {
					found = append(found, r)
				}
			}
			if len(found) == 1 && found[0].Status == "enabled" {
				return found[0]
			}
			last = fmt.Sprintf("routers of the route: %+v", found)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no enabled router %s* of the kubernetesGateway provider after %v: %s", prefix, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// listRouters returns every HTTP router Traefik's API lists.
func listRouters(traefik *harness.Traefik) ([]harness.Router, error) {
	r, err := harness.TryDo(http.MethodGet, traefik.APIURL+"/api/http/routers?per_page=1000", nil, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", r.Status, r.Body)
	}
	var routers []harness.Router
	if err := json.Unmarshal(r.Body, &routers); err != nil {
		return nil, err
	}
	return routers, nil
}
