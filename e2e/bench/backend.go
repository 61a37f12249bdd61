package bench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// BackendEnv is the environment variable that makes the bench test binary serve as the static
// backend (see ServeBackend) instead of running tests.
const BackendEnv = "GRAYLANE_BENCH_BACKEND"

// Response headers of the static backend, for checking a variant's routing before its load.
const (
	// HeaderPort is the backend port the request arrived on.
	HeaderPort = "X-Bench-Port"
	// HeaderSeenLane echoes the lane header (X-Gray-Lane) the request carried.
	HeaderSeenLane = "X-Bench-Seen-Lane"
	// HeaderSeenNoop echoes the headers the do-nothing plugins set, "a" and "b".
	HeaderSeenNoop = "X-Bench-Seen-Noop"
)

var body = []byte("ok\n")

// staticHandler answers every request with a 3-byte body and headers echoing what the proxy
// in front set, so that the backend costs the same little time in every variant.
type staticHandler struct {
	port string
}

func (h staticHandler) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	hdr := rw.Header()
	hdr["Content-Type"] = []string{"text/plain"}
	hdr[HeaderPort] = []string{h.port}
	if v := req.Header.Get("X-Gray-Lane"); v != "" {
		hdr[HeaderSeenLane] = []string{v}
	}
	if v := req.Header.Get("X-Bench-Noop") + req.Header.Get("X-Bench-Noop-2"); v != "" {
		hdr[HeaderSeenNoop] = []string{v}
	}
	_, _ = rw.Write(body)
}

// ServeBackend runs the static backend on two loopback ports (the stable and the lane
// address of the same process), prints "listening on <url> <url>" and serves until its
// standard input is closed.
func ServeBackend() error {
	var urls [2]string
	errc := make(chan error, 2)
	for i := range urls {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		urls[i] = "http://127.0.0.1:" + port
		srv := &http.Server{Handler: staticHandler{port: port}, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(ln) }()
	}
	fmt.Printf("listening on %s %s\n", urls[0], urls[1])
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		errc <- nil
	}()
	return <-errc
}
