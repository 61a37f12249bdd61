package dispatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// stickiness is a lane's sticky sessions: the name of the cookie that names a client's server,
// and the lane's servers by the value of that cookie.
type stickiness struct {
	cookie  string
	byValue map[string]*server // the servers whose weight is not 0
}

// sameSiteModes maps the values of StickyCookie.SameSite to their mode ("default", like "", sends
// no attribute).
var sameSiteModes = map[string]http.SameSite{
	"":        http.SameSiteDefaultMode,
	"default": http.SameSiteDefaultMode,
	"none":    http.SameSiteNoneMode,
	"lax":     http.SameSiteLaxMode,
	"strict":  http.SameSiteStrictMode,
}

// parseStickyCookie checks the sticky cookie configuration of lane name and returns the cookie
// its servers set, without a value.
func parseStickyCookie(name string, cfg *StickyCookie) (*http.Cookie, error) {
	cookie := &http.Cookie{Name: cfg.Name, Path: "/", Domain: cfg.Domain, MaxAge: cfg.MaxAge,
		Secure: cfg.Secure, HttpOnly: cfg.HTTPOnly}
	if cookie.Name == "" {
		cookie.Name = "graylane_server_" + name
	}
	if err := checkHeaderName(cookie.Name); err != nil {
		return nil, fmt.Errorf("name: %q: %w", cfg.Name, err)
	}
	mode, ok := sameSiteModes[strings.ToLower(cfg.SameSite)]
	if !ok {
		return nil, fmt.Errorf("sameSite: %q: must be none, lax, strict or default", cfg.SameSite)
	}
	if mode == http.SameSiteNoneMode && !cfg.Secure {
		return nil, fmt.Errorf("sameSite: %q: needs secure, browsers drop SameSite=None cookies that are not Secure", cfg.SameSite)
	}
	cookie.SameSite = mode
	if cfg.MaxAge < 0 {
		return nil, fmt.Errorf("maxAge: %d: must not be negative (0 is a session cookie)", cfg.MaxAge)
	}
	if cfg.Path != nil {
		if !strings.HasPrefix(*cfg.Path, "/") || strings.IndexFunc(*cfg.Path, badPathRune) >= 0 {
			return nil, fmt.Errorf("path: %q: must start with / and hold no control character or ;", *cfg.Path)
		}
		cookie.Path = *cfg.Path
	}
	probe := *cookie
	probe.Value = "0" // Valid checks the value too; each server's is set by makeSticky
	if err := probe.Valid(); err != nil {
		return nil, fmt.Errorf("domain: %q: %w", cfg.Domain, err)
	}
	return cookie, nil
}

// badPathRune reports whether r may not appear in a cookie's path (RFC 6265: any CHAR except
// controls and ";").
func badPathRune(r rune) bool {
	return r < ' ' || r >= 0x7f || r == ';'
}

// stickyValue is the sticky cookie value that names the server with the given normalised URL:
// the first 16 hex digits of its SHA-256, as Traefik's sticky cookies.
func stickyValue(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// makeSticky gives s, a server of a sticky lane, the cookie that names it, from the lane's cookie.
func makeSticky(s *server, cookie http.Cookie) {
	cookie.Value = stickyValue(s.key)
	s.stickyName, s.stickyValue = cookie.Name, cookie.Value
	s.stickyCookie = []string{cookie.String()}
}

// newStickiness returns the stickiness of a lane by the cookie called name over its servers
// (made sticky by makeSticky).
func newStickiness(name string, servers []*server) *stickiness {
	st := &stickiness{cookie: name, byValue: make(map[string]*server, len(servers))}
	for i := 0; i < len(servers); i++ {
		if servers[i].weight > 0 {
			st.byValue[servers[i].stickyValue] = servers[i]
		}
	}
	return st
}

// pickSticky returns the server of l, a sticky lane, for req: the one its cookie names, while it
// is neither drained nor down; else the lane's next available server (whose response then sets
// its cookie: see stickyResponse); nil when none is available.
func pickSticky(l *lane, req *http.Request) *server {
	if c, err := req.Cookie(l.sticky.cookie); err == nil {
		if s := l.sticky.byValue[c.Value]; s != nil && available(l.balancer, s) {
			return s
		}
	}
	return pickAvailable(l.balancer)
}

// stickyResponse returns the ModifyResponse of the proxy of s, a server of a sticky lane: it
// names the lane and server when servedByHeader is set, passes the rare statuses (101, 502, 503,
// 504) to unusualResponse, and on any other response sets the cookie that names s unless the
// request had it (so that a retry on another server moves the client, and a fallback sets none). Set on the response rather than before
// the proxy runs: an interim 1xx response clears the headers set before it.
func stickyResponse(s *server) func(*http.Response) error {
	return func(res *http.Response) error {
		if s.servedBy != nil {
			res.Header[s.servedByKey] = s.servedBy
		}
		if unusualStatus[res.StatusCode] {
			return unusualResponse(s, res) // no cookie for a server answering 502, 503 or 504
		}
		if c, err := res.Request.Cookie(s.stickyName); err != nil || c.Value != s.stickyValue {
			res.Header["Set-Cookie"] = append(res.Header["Set-Cookie"], s.stickyCookie...)
		}
		return nil
	}
}
