package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"github.com/graylane/graylane/e2e/harness"
)

// Apply creates or updates every object of a multi-document YAML (or JSON) text, in order,
// and fails the test on the first error: the API server validates each object against its
// schema, so Apply is also the check that a manifest is one Kubernetes accepts. Objects with
// no namespace that need one go to "default".
func (c *Cluster) Apply(tb testing.TB, manifests string) {
	tb.Helper()
	if err := c.ApplyErr(manifests); err != nil {
		tb.Fatalf("kube: apply: %v", err)
	}
}

// ApplyErr is Apply returning the error instead of failing the test.
func (c *Cluster) ApplyErr(manifests string) error {
	objs, err := Decode(manifests)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if err := c.apply(obj); err != nil {
			return fmt.Errorf("%s %s: %w", obj.GetKind(), name(obj), err)
		}
	}
	return nil
}

// Decode splits a multi-document YAML (or JSON) text into objects, skipping empty documents.
func Decode(manifests string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

func (c *Cluster) apply(obj *unstructured.Unstructured) error {
	res, err := c.resource(obj)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = res.Create(ctx, obj, metav1.CreateOptions{FieldValidation: "Strict"})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	obj = obj.DeepCopy()
	obj.SetResourceVersion(cur.GetResourceVersion())
	_, err = res.Update(ctx, obj, metav1.UpdateOptions{FieldValidation: "Strict"})
	return err
}

// Delete deletes the objects of a multi-document YAML text; objects already gone are skipped.
func (c *Cluster) Delete(tb testing.TB, manifests string) {
	tb.Helper()
	objs, err := Decode(manifests)
	if err != nil {
		tb.Fatalf("kube: delete: %v", err)
	}
	for _, obj := range objs {
		res, err := c.resource(obj)
		if err == nil {
			err = res.Delete(ctx(tb, 30*time.Second), obj.GetName(), metav1.DeleteOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			tb.Fatalf("kube: delete %s %s: %v", obj.GetKind(), name(obj), err)
		}
	}
}

// Get returns an object by API version, kind, namespace ("" for cluster-scoped) and name.
func (c *Cluster) Get(tb testing.TB, apiVersion, kind, namespace, objName string) *unstructured.Unstructured {
	tb.Helper()
	obj := &unstructured.Unstructured{}
	obj.SetAPIVersion(apiVersion)
	obj.SetKind(kind)
	obj.SetNamespace(namespace)
	obj.SetName(objName)
	res, err := c.resource(obj)
	if err != nil {
		tb.Fatalf("kube: get %s %s: %v", kind, name(obj), err)
	}
	got, err := res.Get(ctx(tb, 30*time.Second), objName, metav1.GetOptions{})
	if err != nil {
		tb.Fatalf("kube: get %s %s: %v", kind, name(obj), err)
	}
	return got
}

// resource maps obj's kind to its REST resource, namespacing obj when the resource is. A kind
// the cached discovery does not know (a CRD just created) refreshes it, for up to 20 seconds.
func (c *Cluster) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	var mapping *meta.RESTMapping
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		mapping, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err == nil || !meta.IsNoMatchError(err) || time.Now().After(deadline) {
			break
		}
		c.mapper.Reset()
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	if mapping.Scope.Name() != meta.RESTScopeNameNamespace {
		return c.dynamic.Resource(mapping.Resource), nil
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace("default")
	}
	return c.dynamic.Resource(mapping.Resource).Namespace(obj.GetNamespace()), nil
}

func name(obj *unstructured.Unstructured) string {
	if ns := obj.GetNamespace(); ns != "" {
		return ns + "/" + obj.GetName()
	}
	return obj.GetName()
}

// TraefikCRDFile returns the path of the CRD definitions shipped in the Traefik module the
// e2e module pins (docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml),
// downloading the module into the module cache if needed.
func TraefikCRDFile(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(moduleDir(tb, "github.com/traefik/traefik/v3"), "docs", "content", "reference", "dynamic-configuration", "kubernetes-crd-definition-v1.yml")
}

// GatewayAPICRDFiles returns the paths of the standard-channel CRDs of the Gateway API
// release the e2e module requires (sigs.k8s.io/gateway-api, the version Traefik's
// kubernetesGateway provider is built with): config/crd/standard/*.yaml of that module,
// downloaded into the module cache if needed.
func GatewayAPICRDFiles(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(moduleDir(tb, "sigs.k8s.io/gateway-api"), "config", "crd", "standard", "*.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatal("kube: no config/crd/standard/*.yaml in the sigs.k8s.io/gateway-api module")
	}
	return files
}

// moduleDir returns the module cache directory of a module the e2e module requires, at the
// version e2e/go.mod selects, downloading it if needed.
func moduleDir(tb testing.TB, module string) string {
	tb.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = filepath.Join(harness.RepoRoot(), "e2e")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("kube: go mod download %s: %v\n%s", module, err, stderr.String())
	}
	var dir string
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), `"Dir": "`); ok {
			dir = strings.TrimSuffix(strings.TrimSuffix(v, ","), `"`)
		}
	}
	if dir == "" {
		tb.Fatalf("kube: no Dir in go mod download output:\n%s", out.String())
	}
	return dir
}

// InstallTraefikCRDs applies the Traefik CRDs of the pinned Traefik release and waits until
// the API server serves every one of them.
func (c *Cluster) InstallTraefikCRDs(tb testing.TB) {
	tb.Helper()
	b, err := os.ReadFile(TraefikCRDFile(tb))
	if err != nil {
		tb.Fatal(err)
	}
	c.installCRDs(tb, string(b))
}

// InstallGatewayAPICRDs applies the standard-channel Gateway API CRDs (GatewayClass, Gateway,
// HTTPRoute, GRPCRoute, ReferenceGrant, BackendTLSPolicy) of the release the e2e module
// requires, and waits until the API server serves every one of them.
func (c *Cluster) InstallGatewayAPICRDs(tb testing.TB) {
	tb.Helper()
	var docs []string
	for _, f := range GatewayAPICRDFiles(tb) {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	c.installCRDs(tb, strings.Join(docs, "\n---\n"))
}

// installCRDs applies CustomResourceDefinitions and waits until every one is established.
func (c *Cluster) installCRDs(tb testing.TB, manifests string) {
	tb.Helper()
	c.Apply(tb, manifests)
	objs, err := Decode(manifests)
	if err != nil {
		tb.Fatal(err)
	}
	crds := c.dynamic.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	deadline := time.Now().Add(30 * time.Second)
	for _, obj := range objs {
		for !established(crds, obj.GetName()) {
			if time.Now().After(deadline) {
				tb.Fatalf("kube: CRD %s not established after 30s", obj.GetName())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	c.mapper.Reset()
}

func established(crds dynamic.NamespaceableResourceInterface, crdName string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	crd, err := crds.Get(ctx, crdName, metav1.GetOptions{})
	if err != nil {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, cond := range conds {
		m, _ := cond.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
