package kube_test

import (
	"os"
	"strings"
	"testing"

	"github.com/graylane/graylane/e2e/kube"
)

func TestCluster(t *testing.T) {
	if os.Getenv("GRAYLANE_SKIP_K8S") == "1" {
		t.Skip("GRAYLANE_SKIP_K8S=1: skipping the Kubernetes control plane test")
	}
	c := kube.Start(t)
	c.InstallTraefikCRDs(t)

	const cm = `
apiVersion: v1
kind: ConfigMap
metadata: {name: demo}
data: {k: "1"}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: strip, namespace: default}
spec:
  stripPrefix: {prefixes: [/api]}
`
	c.Apply(t, cm)
	c.Apply(t, strings.Replace(cm, `k: "1"`, `k: "2"`, 1)) // update in place
	got := c.Get(t, "v1", "ConfigMap", "default", "demo")
	if v := got.Object["data"].(map[string]any)["k"]; v != "2" {
		t.Fatalf("ConfigMap data k = %v after the second Apply, want 2", v)
	}
	c.Get(t, "traefik.io/v1alpha1", "Middleware", "default", "strip")

	// The API server validates against the CRD schema: an unknown field is rejected.
	err := c.ApplyErr(`
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: bad}
spec:
  stripPrefix: {prefix: [/api]}
`)
	if err == nil || !strings.Contains(err.Error(), "prefix") {
		t.Fatalf("Apply of a Middleware with an unknown field: err = %v, want a schema error naming it", err)
	}

	c.Delete(t, cm)
	c.Delete(t, cm) // already gone: no error
}
