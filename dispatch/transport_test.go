package dispatch_test

import (
	"crypto/tls"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/graylane/graylane/dispatch"
)

// connCounter counts the connections a server accepted.
type connCounter struct {
	mu sync.Mutex
	n  int
}

func (c *connCounter) connState(_ net.Conn, state http.ConnState) {
	if state == http.StateNew {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
}

func (c *connCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestTransportsAreShared(t *testing.T) {
	conns := &connCounter{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Backend", "a")
	}))
	srv.Config.ConnState = conns.connState
	srv.Start()
	closeAndHold(t, srv)

	// Traefik builds a new instance on every reload and never closes the old ones. Instances
	// for the same server address share one transport, so one keep-alive connection serves
	// the requests of all of them, one after the other. (A second one at most: the transport puts
	// a connection back in its pool just after the response body ended, and under load the next
	// request can come first.)
	for i := 0; i < 100; i++ {
		cfg := healthOff()
		cfg.Lanes["canary"] = laneConfig(srv.URL, srv.URL+"/prefix")
		rec := serve(newHandler(t, cfg), "canary")
		if rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "a" {
			t.Fatalf("instance %d: status %d from %q", i, rec.Code, rec.Header().Get("X-Backend"))
		}
	}
	shared := conns.count()
	if shared > 2 {
		t.Fatalf("100 instances opened %d connections to the server, want 1", shared)
	}

	// Other timeouts make another transport, each of them.
	for i, timeout := range []string{"dial", "responseHeader", "idle"} {
		cfg := healthOff()
		switch timeout {
		case "dial":
			cfg.Timeouts.Dial = "1s"
		case "responseHeader":
			cfg.Timeouts.ResponseHeader = "59s"
		default:
			cfg.Timeouts.Idle = "89s"
		}
		cfg.Lanes["canary"] = laneConfig(srv.URL)
		serve(newHandler(t, cfg), "canary")
		if n := conns.count(); n != shared+1+i {
			t.Fatalf("another %s timeout: %d connections, want %d", timeout, n, shared+1+i)
		}
	}
}

func TestTLSServers(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("X-Backend", "tls")
	}))
	closeAndHold(t, srv)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(caPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		tls        dispatch.TLS
		wantStatus int
	}{
		{"system roots", dispatch.TLS{}, http.StatusBadGateway},
		{"rootCAs PEM text", dispatch.TLS{RootCAs: []string{caPEM}}, http.StatusOK},
		{"rootCAs file", dispatch.TLS{RootCAs: []string{caFile}}, http.StatusOK},
		{"serverName in the certificate", dispatch.TLS{RootCAs: []string{caFile}, ServerName: "example.com"}, http.StatusOK},
		{"serverName not in the certificate", dispatch.TLS{RootCAs: []string{caFile}, ServerName: "other.test"}, http.StatusBadGateway},
		{"insecureSkipVerify", dispatch.TLS{InsecureSkipVerify: true}, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := healthOff()
			cfg.TLS = tc.tls
			lane := laneConfig(srv.URL)
			lane.Fallback = "none"
			cfg.Lanes["canary"] = lane
			rec := serve(newHandler(t, cfg), "canary")
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d", rec.Code, tc.wantStatus)
			}
			if tc.wantStatus == http.StatusOK && rec.Header().Get("X-Backend") != "tls" {
				t.Fatalf("answered by %q", rec.Header().Get("X-Backend"))
			}
		})
	}
}

// TestHTTP2ToHTTPSServers checks that an https server that offers HTTP/2 is spoken to in HTTP/2, as
// Traefik does, with its trailers passed on (what a gRPC server needs), while a WebSocket upgrade
// to it still goes over HTTP/1.1.
func TestHTTP2ToHTTPSServers(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("X-Seen-Proto", req.Proto)
		rw.Header().Set("Trailer", "Grpc-Status") // as a gRPC server answers
		_, _ = rw.Write([]byte("message"))
		rw.Header().Set("Grpc-Status", "0")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	closeAndHold(t, srv)
	cfg := healthOff()
	cfg.TLS.RootCAs = []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))}
	cfg.Lanes["canary"] = laneConfig(srv.URL)
	h := newHandler(t, cfg)
	rec := serve(h, "canary")
	if rec.Code != http.StatusOK || rec.Header().Get("X-Seen-Proto") != "HTTP/2.0" {
		t.Fatalf("status %d, protocol at the server %q, want HTTP/2.0", rec.Code, rec.Header().Get("X-Seen-Proto"))
	}
	if got := rec.Result().Trailer.Get("Grpc-Status"); got != "0" || rec.Body.String() != "message" {
		t.Fatalf("body %q, trailer Grpc-Status %q, want the message and 0", rec.Body.String(), got)
	}
	req := httptest.NewRequest(http.MethodGet, "http://front.example/", nil)
	req.Header.Set("X-Gray-Lane", "canary")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("X-Seen-Proto"); got != "HTTP/1.1" {
		t.Fatalf("an upgrade reached the server in %q, want HTTP/1.1", got)
	}
}

// tlsBackend starts an https server that answers with its name in X-Backend, in HTTP/2 when
// http2 is set, and returns it with its certificate as PEM text.
func tlsBackend(t *testing.T, name string, http2 bool) (*httptest.Server, string) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("X-Backend", name)
		rw.Header().Set("X-Seen-Proto", req.Proto)
	}))
	srv.EnableHTTP2 = http2
	srv.StartTLS()
	closeAndHold(t, srv)
	return srv, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

// TestCertificateFailures checks that a server whose certificate a middleware cannot verify is
// not counted down (passive health is shared by URL, the TLS settings belong to each
// middleware), and that the request, which was never sent, goes to the next server, body and all.
func TestCertificateFailures(t *testing.T) {
	srv, ca := tlsBackend(t, "tls", false)
	good := newBackend(t, "good")
	untrusting := dispatch.CreateConfig() // passive health on: 3 failures within 10s
	untrusting.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: srv.URL}, {URL: good.URL}}, Fallback: "none"}
	h := newHandler(t, untrusting)
	for i := 0; i < 5; i++ {
		rec := send(h, http.MethodPost, "canary", "payload")
		if rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "good" || rec.Header().Get("X-Seen-Body") != "payload" {
			t.Fatalf("POST %d: %d from %q with body %q, want 200 from good", i, rec.Code, rec.Header().Get("X-Backend"), rec.Header().Get("X-Seen-Body"))
		}
	}
	trusting := dispatch.CreateConfig()
	trusting.TLS.RootCAs = []string{ca}
	trusting.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: srv.URL}}, Fallback: "none"}
	if rec := serve(newHandler(t, trusting), "canary"); rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "tls" {
		t.Fatalf("a middleware that trusts the server: %d from %q, want 200 from tls", rec.Code, rec.Header().Get("X-Backend"))
	}
}

// TestRefusedToSend checks that a request Go's transport refuses to send to an HTTP/2 server (an
// upgrade other than WebSocket, headers over the server's limit) goes to the next server, body
// and all, since the server never saw it, and does not count against the server.
func TestRefusedToSend(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("X-Seen-Proto", req.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.Config.MaxHeaderBytes = 4 << 10
	srv.StartTLS()
	closeAndHold(t, srv)
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	good := newBackend(t, "good")
	config := func(urls ...string) *dispatch.Config {
		cfg := dispatch.CreateConfig()
		cfg.Health.MaxFails = intp(1)
		cfg.TLS.RootCAs = []string{ca}
		cfg.Lanes["canary"] = dispatch.Lane{Servers: laneConfig(urls...).Servers, Fallback: "none"}
		return cfg
	}
	// Go's transport learns the server's header limit from its SETTINGS frame, which it does not
	// wait for on a new connection: an answered request first makes sure it has it. (Transports
	// are shared, so the connection is the one the handler below uses.)
	if rec := serve(newHandler(t, config(srv.URL)), "canary"); rec.Code != http.StatusOK {
		t.Fatalf("first request: %d, want 200", rec.Code)
	}
	h := newHandler(t, config(srv.URL, good.URL))
	for _, headers := range [][]string{
		{"Connection", "Upgrade", "Upgrade", "foo"},
		{"X-Large", strings.Repeat("x", 64<<10)},
	} {
		rec := send(h, http.MethodPost, "canary", "payload", headers...)
		if rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "good" || rec.Header().Get("X-Seen-Body") != "payload" {
			t.Fatalf("POST with %.30q: %d from %q with body %q, want 200 from good", headers, rec.Code, rec.Header().Get("X-Backend"), rec.Header().Get("X-Seen-Body"))
		}
	}
	if rec := serve(newHandler(t, config(srv.URL)), "canary"); rec.Code != http.StatusOK || rec.Header().Get("X-Seen-Proto") != "HTTP/2.0" {
		t.Fatalf("afterwards: %d in %q, want 200 in HTTP/2.0 (not down)", rec.Code, rec.Header().Get("X-Seen-Proto"))
	}
}

// TestNoTLSServerRetried checks that an https:// URL whose server does not speak TLS sends the
// request (body and all) on to the next server, and that the failures do not take the server
// down: every request tries it again.
func TestNoTLSServerRetried(t *testing.T) {
	conns := &connCounter{}
	plain := httptest.NewUnstartedServer(http.NotFoundHandler())
	plain.Config.ConnState = conns.connState
	plain.Start()
	closeAndHold(t, plain)
	good := newBackend(t, "good")
	cfg := dispatch.CreateConfig()
	cfg.Health.MaxFails = intp(1)
	cfg.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: "https://" + plain.Listener.Addr().String()}, {URL: good.URL}}, Fallback: "none"}
	h := newHandler(t, cfg)
	for i := 0; i < 3; i++ {
		rec := send(h, http.MethodPost, "canary", "payload")
		if rec.Code != http.StatusOK || rec.Header().Get("X-Backend") != "good" || rec.Header().Get("X-Seen-Body") != "payload" {
			t.Fatalf("POST %d: %d from %q with body %q, want 200 from good", i, rec.Code, rec.Header().Get("X-Backend"), rec.Header().Get("X-Seen-Body"))
		}
	}
	if n := conns.count(); n < 2 {
		t.Fatalf("the server without TLS was tried %d times for 3 requests round-robin, want it never down", n)
	}
}

// TestUpgradeToHTTP2OnlyServer checks that a WebSocket upgrade to a server that speaks only HTTP/2
// (it refuses, with an alert, a TLS handshake that does not offer h2, which the transport does not
// for an upgrade) does not count against the server: its other requests are fine. The server
// refuses on reading the client's hello, so the alert is the client's handshake error every time.
// (A server that refuses once the handshake is over races with the request the client sends
// then: the client may see its write fail instead, which counts as a dropped connection.)
func TestUpgradeToHTTP2OnlyServer(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		rw.Header().Set("X-Seen-Proto", req.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	closeAndHold(t, srv)
	srv.TLS.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		for _, proto := range hello.SupportedProtos {
			if proto == "h2" {
				return nil, nil
			}
		}
		return nil, errors.New("HTTP/2 only")
	}
	cfg := dispatch.CreateConfig()
	cfg.Health.MaxFails = intp(1)
	cfg.TLS.RootCAs = []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))}
	cfg.Lanes["canary"] = dispatch.Lane{Servers: laneConfig(srv.URL).Servers, Fallback: "none"}
	h := newHandler(t, cfg)
	if rec := upgrade(h); rec.Code != http.StatusBadGateway {
		t.Fatalf("upgrade: status %d, want 502", rec.Code)
	}
	if rec := serve(h, "canary"); rec.Code != http.StatusOK || rec.Header().Get("X-Seen-Proto") != "HTTP/2.0" {
		t.Fatalf("afterwards: %d in %q, want 200 in HTTP/2.0 (not down)", rec.Code, rec.Header().Get("X-Seen-Proto"))
	}
}

// TestTLSErrorAfterSending checks that a TLS error that comes once the request was sent (the
// server read it, then sent a record that is not TLS) is not taken for a failed handshake: a POST
// is not sent again.
func TestTLSErrorAfterSending(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS() // for its certificate only
	closeAndHold(t, srv)
	addr := rawServer(t, srv.TLS, "HTTP/1.1 200 OK\r\n\r\n") // plain text inside TLS
	good := newBackend(t, "good")
	cfg := healthOff()
	cfg.TLS.RootCAs = []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))}
	cfg.Lanes["canary"] = dispatch.Lane{Servers: []dispatch.Server{{URL: "https://" + addr}, {URL: good.URL}}, Fallback: "none"}
	rec := send(newHandler(t, cfg), http.MethodPost, "canary", "")
	if rec.Code != http.StatusBadGateway || rec.Header().Get("X-Backend") != "" {
		t.Fatalf("POST: %d from %q, want 502 and no second server", rec.Code, rec.Header().Get("X-Backend"))
	}
}
