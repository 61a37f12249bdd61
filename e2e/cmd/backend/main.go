// Command backend is the HTTP server the end-to-end tests put behind Traefik. It listens on
// a loopback port, prints "listening on http://127.0.0.1:<port>" on stdout, and exits when its
// standard input is closed (so it never outlives the test process that started it). With
// -tls-cert and -tls-key (PEM files) it serves HTTPS and prints an https:// URL.
//
// Every path answers a JSON description of the request:
//
//	{"backend": <name>, "method", "host", "path", "query", "headers": {name: value}}
//
// except these:
//
//	/ws                  WebSocket echo (text and binary messages are sent back unchanged)
//	/sse?n=3&gap=200ms   n server-sent events "data: <i>", each flushed, gap apart
//	/upload              reads the request body as a stream and answers {"backend", "bytes"}
//	/slow?d=2s           waits d, then answers the JSON description
//	/hang                never answers; returns when the client goes away
//	/status?code=503     answers the JSON description with that status code
//	/seen                answers {"backend", "ids": {id: n}}: every X-Request-Id header value
//	                     this backend received so far, and how many requests carried it
//
// Only requests that carry X-Request-Id are remembered (the tests that send it send a bounded
// number), whatever their path, as soon as their headers have arrived.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	name := flag.String("name", "backend", "name reported in every answer")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	certFile := flag.String("tls-cert", "", "certificate PEM file: serve HTTPS")
	keyFile := flag.String("tls-key", "", "private key PEM file of -tls-cert")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	scheme := "http"
	if *certFile != "" {
		scheme = "https"
	}
	fmt.Printf("listening on %s://%s\n", scheme, ln.Addr())

	// Exit when the parent closes our stdin or dies.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()

	srv := &http.Server{Handler: &server{name: *name, seen: map[string]int{}}, ReadHeaderTimeout: 10 * time.Second}
	if *certFile != "" {
		srv.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
		log.Fatal(srv.ServeTLS(ln, *certFile, *keyFile))
	}
	log.Fatal(srv.Serve(ln))
}

type server struct {
	name string

	mu   sync.Mutex
	seen map[string]int // X-Request-Id values received, see /seen
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *server) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	rw.Header().Set("X-Backend", s.name)
	if id := req.Header.Get("X-Request-Id"); id != "" {
		s.mu.Lock()
		s.seen[id]++
		s.mu.Unlock()
	}
	switch req.URL.Path {
	case "/seen":
		s.mu.Lock()
		ids := make(map[string]int, len(s.seen))
		for id, n := range s.seen {
			ids[id] = n
		}
		s.mu.Unlock()
		writeJSON(rw, http.StatusOK, map[string]any{"backend": s.name, "ids": ids})
	case "/ws":
		s.echoWebSocket(rw, req)
	case "/sse":
		s.events(rw, req)
	case "/upload":
		n, err := io.Copy(io.Discard, req.Body)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(rw, http.StatusOK, map[string]any{"backend": s.name, "bytes": n})
	case "/slow":
		d, _ := time.ParseDuration(req.URL.Query().Get("d"))
		select {
		case <-time.After(d):
		case <-req.Context().Done():
			return
		}
		writeJSON(rw, http.StatusOK, s.describe(req))
	case "/hang":
		<-req.Context().Done()
	case "/status":
		code, err := strconv.Atoi(req.URL.Query().Get("code"))
		if err != nil || code < 100 || code > 999 {
			code = http.StatusOK
		}
		writeJSON(rw, code, s.describe(req))
	default:
		writeJSON(rw, http.StatusOK, s.describe(req))
	}
}

func (s *server) describe(req *http.Request) map[string]any {
	headers := map[string]string{}
	for k, v := range req.Header {
		headers[k] = strings.Join(v, ", ")
	}
	return map[string]any{
		"backend": s.name,
		"method":  req.Method,
		"host":    req.Host,
		"path":    req.URL.Path,
		"query":   req.URL.RawQuery,
		"headers": headers,
	}
}

func (s *server) echoWebSocket(rw http.ResponseWriter, req *http.Request) {
	conn, err := upgrader.Upgrade(rw, req, http.Header{"X-Backend": {s.name}})
	if err != nil {
		return // Upgrade has answered the client.
	}
	defer conn.Close()
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}

func (s *server) events(rw http.ResponseWriter, req *http.Request) {
	n, err := strconv.Atoi(req.URL.Query().Get("n"))
	if err != nil || n < 0 {
		n = 3
	}
	gap, err := time.ParseDuration(req.URL.Query().Get("gap"))
	if err != nil {
		gap = 200 * time.Millisecond
	}
	flusher, ok := rw.(http.Flusher)
	if !ok {
		http.Error(rw, "no flusher", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/event-stream")
	rw.Header().Set("Cache-Control", "no-cache")
	rw.WriteHeader(http.StatusOK)
	flusher.Flush()
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-time.After(gap):
			case <-req.Context().Done():
				return
			}
		}
		fmt.Fprintf(rw, "id: %d\ndata: %s %d\n\n", i, s.name, i)
		flusher.Flush()
	}
}

func writeJSON(rw http.ResponseWriter, code int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(code)
	_ = json.NewEncoder(rw).Encode(v)
}
