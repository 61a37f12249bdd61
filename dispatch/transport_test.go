package dispatch_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
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
	t.Cleanup(srv.Close)

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

	// Other timeouts make another transport.
	cfg := healthOff()
	cfg.Timeouts.Dial = "1s"
	cfg.Lanes["canary"] = laneConfig(srv.URL)
	serve(newHandler(t, cfg), "canary")
	if n := conns.count(); n != shared+1 {
		t.Fatalf("%d connections, want %d", n, shared+1)
	}
}
