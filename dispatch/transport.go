package dispatch

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// maxTransports bounds the package-level transport table.
const maxTransports = 1024

// transportOptions are the parsed Timeouts and TLS settings: the settings of a transport.
type transportOptions struct {
	dial           time.Duration
	responseHeader time.Duration
	idle           time.Duration
	// tls is the client TLS configuration for https servers, nil for Go's default (the
	// system's roots); tlsKey tells it apart in the transport table ("" for the default).
	tls    *tls.Config
	tlsKey string
}

// parseTimeouts parses the timeouts configuration (with its defaults filled in) into t.
func parseTimeouts(cfg *Timeouts, t *transportOptions) error {
	var err error
	if t.dial, err = parseDuration(cfg.Dial); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if t.responseHeader, err = parseDuration(cfg.ResponseHeader); err != nil {
		return fmt.Errorf("responseHeader: %w", err)
	}
	if t.idle, err = parseDuration(cfg.Idle); err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	return nil
}

// parseTLS parses the TLS configuration into t: the certificate authorities of RootCAs, each a
// PEM text or the path of a PEM file (read once, here), InsecureSkipVerify and ServerName.
func parseTLS(cfg *TLS, t *transportOptions) error {
	if !cfg.InsecureSkipVerify && len(cfg.RootCAs) == 0 && cfg.ServerName == "" {
		return nil
	}
	t.tls = &tls.Config{
		InsecureSkipVerify: cfg.InsecureSkipVerify, //nolint:gosec // the user's explicit choice, documented as such
		ServerName:         cfg.ServerName,
		MinVersion:         tls.VersionTLS12,
	}
	sum := sha256.New()
	if len(cfg.RootCAs) > 0 {
		t.tls.RootCAs = x509.NewCertPool()
	}
	for i := 0; i < len(cfg.RootCAs); i++ {
		pem, err := readPEM(cfg.RootCAs[i])
		if err != nil {
			return fmt.Errorf("rootCAs[%d]: %q: %w", i, shorten(cfg.RootCAs[i]), err)
		}
		if !t.tls.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("rootCAs[%d]: %q: no PEM certificate in it", i, shorten(cfg.RootCAs[i]))
		}
		sum.Write(pem)
		sum.Write([]byte{0}) // ends the entry
	}
	t.tlsKey = fmt.Sprintf("insecure=%t name=%q roots=%x", cfg.InsecureSkipVerify, cfg.ServerName, sum.Sum(nil))
	return nil
}

// readPEM returns entry itself when it is PEM text, else the content of the file it names.
func readPEM(entry string) ([]byte, error) {
	if strings.Contains(entry, "-----BEGIN") {
		return []byte(entry), nil
	}
	if strings.TrimSpace(entry) == "" {
		return nil, errors.New("empty: want a PEM file path or PEM text")
	}
	data, err := os.ReadFile(entry)
	if err != nil {
		if strings.IndexFunc(entry, isControl) >= 0 && errors.Unwrap(err) != nil {
			// The error repeats the path as it is ("open <path>: ..."): the caller quotes it
			// already, and a control character in it would break the error's line in the log.
			err = errors.Unwrap(err)
		}
		return nil, fmt.Errorf("not PEM text, and not a file that can be read: %w", err)
	}
	return data, nil
}

// isControl reports whether r is an ASCII control character.
func isControl(r rune) bool {
	return r < ' ' || r == 0x7f
}

// shorten returns s, or its first line and an ellipsis when s is PEM text, for error messages.
func shorten(s string) string {
	if first, _, found := strings.Cut(strings.TrimSpace(s), "\n"); found {
		return first + "…"
	}
	return s
}

// transportTable holds the transports shared by every middleware instance, one per server
// address and transport options, so that the instances Traefik builds on each reload (and
// never closes) reuse the connection pools instead of leaving one idle pool each.
type transportTable struct {
	mu    sync.Mutex
	byKey map[string]*http.Transport
	order []string // keys, oldest first, to evict from when the table is full
}

// transports is the transport table shared by every middleware instance, across reloads.
var transports = &transportTable{byKey: make(map[string]*http.Transport)}

// sharedTransport returns the transport for u's address (see serverAddress) with options t,
// creating it when it does not exist yet.
func sharedTransport(u *url.URL, t *transportOptions) *http.Transport {
	key := fmt.Sprintf("%s %d %d %d %s", serverAddress(u), t.dial, t.responseHeader, t.idle, t.tlsKey)
	transports.mu.Lock()
	defer transports.mu.Unlock()
	if tr := transports.byKey[key]; tr != nil {
		return tr
	}
	if len(transports.order) >= maxTransports {
		// The oldest transport may still serve an old instance: it keeps working, it just no
		// longer keeps idle connections.
		oldest := transports.order[0]
		transports.byKey[oldest].CloseIdleConnections()
		delete(transports.byKey, oldest)
		transports.order = transports.order[1:]
	}
	tr := newTransport(t)
	transports.byKey[key] = tr
	transports.order = append(transports.order, key)
	return tr
}

// newTransport returns a transport with Traefik's defaults and the given options: HTTP/1.1 to
// http:// servers, and HTTP/2 to https:// servers that offer it (negotiated in the TLS
// handshake), as Traefik does unless disableHTTP2 is set; the transport sends a WebSocket upgrade
// over HTTP/1.1 all the same (and refuses any other upgrade to an HTTP/2 server).
func newTransport(t *transportOptions) *http.Transport {
	dialer := &net.Dialer{Timeout: t.dial, KeepAlive: 15 * time.Second}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		// Not the method value dialer.DialContext: Yaegi rejects the method value of a compiled type.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost:   200,
		IdleConnTimeout:       t.idle,
		ResponseHeaderTimeout: t.responseHeader,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true, // needed with a DialContext of our own
	}
	if t.tls != nil {
		tr.TLSClientConfig = t.tls.Clone()
	}
	return tr
}
