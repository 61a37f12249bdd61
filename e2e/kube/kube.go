// Package kube runs a real, minimal Kubernetes control plane for end-to-end tests: etcd and
// kube-apiserver as separate processes on loopback ports, with no controller-manager, no
// scheduler and no kubelet. What tests apply is stored and validated by the real API server
// (OpenAPI and CRD schemas), and Traefik's kubernetesCRD provider watches it as it would in a
// cluster. Nothing runs Pods: tests point Services at loopback processes with EndpointSlices
// they create themselves.
//
// The binaries come from scripts/build-kube.sh (built once into the graylane cache directory,
// about 7 minutes on 2 cores), or from $GRAYLANE_KUBE_BIN when set.
package kube

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/graylane/graylane/e2e/harness"
)

// Version is the Kubernetes release scripts/build-kube.sh builds.
const Version = "v1.31.0"

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	// Endpoint is the API server URL, https://127.0.0.1:<port>.
	Endpoint string
	// Token is a bearer token whose user is in the system:masters group.
	Token string
	// CAFile is the PEM file of the authority that signed the API server's certificate.
	CAFile string
	// Kubeconfig is a kubeconfig file for the cluster, for kubectl while debugging a test.
	Kubeconfig string
	// Config is the client configuration of the cluster's admin user.
	Config *rest.Config
	// Dir holds the certificates, the etcd data and the processes' logs.
	Dir string

	dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// BinDir returns the directory holding etcd and kube-apiserver: $GRAYLANE_KUBE_BIN when set,
// else the one scripts/build-kube.sh prints after building (or reusing) them. The script runs
// once per process; its progress goes to os.Stderr. A first build takes 7-15 minutes: run such
// a `go test` with -timeout 40m.
func BinDir(tb testing.TB) string {
	tb.Helper()
	binOnce.Do(func() {
		binDir, binErr = findBinDir()
	})
	if binErr != nil {
		tb.Fatalf("kube: binaries: %v", binErr)
	}
	return binDir
}

func findBinDir() (string, error) {
	dir := os.Getenv("GRAYLANE_KUBE_BIN")
	if dir == "" {
		var err error
		if dir, err = harness.RunScript("build-kube.sh"); err != nil {
			return "", err
		}
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// Start starts etcd and kube-apiserver on free loopback ports, with certificates, a token file
// and data in a temporary directory, and waits until the API server reports ready. Both
// processes are killed and reaped by tb.Cleanup. Authorization is AlwaysAllow and the only
// user is an admin: this is a test fixture, not a cluster to expose.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	bin := BinDir(tb)
	dir := tb.TempDir()
	c := &Cluster{Dir: dir, Token: randomToken(tb)}

	p, err := writePKI(dir)
	if err != nil {
		tb.Fatalf("kube: certificates: %v", err)
	}
	c.CAFile = p.caFile
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(c.Token+`,graylane-admin,1000,"system:masters"`+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}

	ports := freePorts(tb, 3)
	clientPort, peerPort, apiPort := ports[0], ports[1], ports[2]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcd := startProcess(tb, filepath.Join(dir, "etcd.log"), filepath.Join(bin, "etcd"),
		"--name=e2e",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	)

	c.Endpoint = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	api := startProcess(tb, filepath.Join(dir, "kube-apiserver.log"), filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file="+p.certFile,
		"--tls-private-key-file="+p.keyFile,
		"--token-auth-file="+tokens,
		"--authorization-mode=AlwaysAllow",
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.saPubFile,
		"--service-account-signing-key-file="+p.saKeyFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	)

	c.Config = &rest.Config{
		Host:            c.Endpoint,
		BearerToken:     c.Token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile},
		QPS:             100,
		Burst:           200,
		Timeout:         30 * time.Second,
		// Deprecation warnings (such as for the FQDN EndpointSlices tests use) would go to
		// klog on stderr.
		WarningHandler: rest.NoWarnings{},
	}
	if err := c.waitReady(60*time.Second, etcd, api); err != nil {
		tb.Fatalf("kube: %v\n--- etcd.log (tail)\n%s\n--- kube-apiserver.log (tail)\n%s", err,
			tailFile(filepath.Join(dir, "etcd.log"), 20), tailFile(filepath.Join(dir, "kube-apiserver.log"), 40))
	}

	c.dynamic, err = dynamic.NewForConfig(c.Config)
	if err != nil {
		tb.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		tb.Fatal(err)
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))

	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, []byte(c.kubeconfig()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return c
}

// waitReady polls /readyz until it answers 200, a process exits, or timeout passes.
func (c *Cluster) waitReady(timeout time.Duration, procs ...*process) error {
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited while starting", p.name)
			}
		}
		req, _ := http.NewRequest(http.MethodGet, c.Endpoint+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %v: %s", timeout, last)
}

func (c *Cluster) kubeconfig() string {
	return `apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: ` + c.Endpoint + `
    certificate-authority: ` + c.CAFile + `
users:
- name: admin
  user:
    token: ` + c.Token + `
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
`
}

// process is a started child process whose log goes to a file.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProcess starts path with args, its output appended to logFile, and registers a Cleanup
// that kills and reaps it. The kernel also kills it if the test process dies first (Linux).
func startProcess(tb testing.TB, logFile, path string, args ...string) *process {
	tb.Helper()
	log, err := os.Create(logFile)
	if err != nil {
		tb.Fatal(err)
	}
	p := &process{name: filepath.Base(path), cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.cmd.Stdout = log
	p.cmd.Stderr = log
	p.cmd.SysProcAttr = childAttr()
	if err := p.cmd.Start(); err != nil {
		log.Close()
		tb.Fatalf("kube: start %s: %v", p.name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		log.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			tb.Errorf("kube: %s did not exit after SIGKILL", p.name)
		}
	})
	return p
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, 0, n)
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("kube: free port: %v", err)
		}
		defer ln.Close() // held until all are picked, so none is handed out twice
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func randomToken(tb testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ctx returns a context bounded by d, cancelled at the end of the test.
func ctx(tb testing.TB, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return c
}
