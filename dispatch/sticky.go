package dispatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// stickiness is a lane's sticky sessions: the cookie that names a client's server, and the
// servers by the value of that cookie.
type stickiness struct {
	cookie   string             // the cookie's name
	byValue  map[string]*server // the lane's servers whose weight is not 0, by cookie value
	balancer *balancer
}

// sameSiteModes maps the values of StickyCookie.SameSite to their mode.
var sameSiteModes = map[string]http.SameSite{
	"":       http.SameSiteDefaultMode,
	"none":   http.SameSiteNoneMode,
	"lax":    http.SameSiteLaxMode,
	"strict": http.SameSiteStrictMode,
}

// buildSticky checks the sticky configuration of lane name and builds its stickiness over the
// lane's servers: each server gets its Set-Cookie header value, computed here once.
func buildSticky(name string, cfg *StickyCookie, servers []*server, b *balancer) (*stickiness, error) {
	cookie := http.Cookie{Name: cfg.Name, Path: "/", Domain: cfg.Domain, MaxAge: cfg.MaxAge,
		Secure: cfg.Secure, HttpOnly: cfg.HTTPOnly}
	if cookie.Name == "" {
		cookie.Name = "graylane_" + name
	}
	if err := checkHeaderName(cookie.Name); err != nil {
		return nil, fmt.Errorf("name: %q: %w", cfg.Name, err)
	}
	mode, ok := sameSiteModes[strings.ToLower(cfg.SameSite)]
	if !ok {
		return nil, fmt.Errorf("sameSite: %q: must be none, lax or strict", cfg.SameSite)
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
	st := &stickiness{cookie: cookie.Name, byValue: make(map[string]*server, len(servers)), balancer: b}
	for i := 0; i < len(servers); i++ {
		sum := sha256.Sum256([]byte(servers[i].key))
		cookie.Value = hex.EncodeToString(sum[:8])
		if err := cookie.Valid(); err != nil {
			return nil, fmt.Errorf("domain: %q: %w", cfg.Domain, err)
		}
		servers[i].stickyCookie = []string{cookie.String()}
		if servers[i].weight > 0 {
			st.byValue[cookie.Value] = servers[i]
		}
	}
	return st, nil
}

// badPathRune reports whether r may not appear in a cookie's path (RFC 6265: any CHAR except
// controls and ";").
func badPathRune(r rune) bool {
	return r < ' ' || r >= 0x7f || r == ';'
}

// pickSticky returns the server of a sticky lane for req: the one its cookie names, while it
// is not drained or down; else the lane's next available server, which the response's cookie
// then names; nil when none is available.
func pickSticky(st *stickiness, rw http.ResponseWriter, req *http.Request) *server {
	if c, err := req.Cookie(st.cookie); err == nil {
		if s := st.byValue[c.Value]; s != nil && !(st.balancer.checking && isDown(s.key)) {
			return s
		}
	}
	s := pickAvailable(st.balancer)
	if s != nil {
		rw.Header()["Set-Cookie"] = append(rw.Header()["Set-Cookie"], s.stickyCookie...)
	}
	return s
}

// stickTo makes the response's sticky cookie name s, the server a request is retried on: it
// replaces the cookie pickSticky may have set for the server that failed, or sets one.
func stickTo(st *stickiness, rw http.ResponseWriter, s *server) {
	prefix := st.cookie + "="
	cookies := rw.Header()["Set-Cookie"]
	kept := make([]string, 0, len(cookies)+1)
	for _, c := range cookies {
		if !strings.HasPrefix(c, prefix) {
			kept = append(kept, c)
		}
	}
	rw.Header()["Set-Cookie"] = append(kept, s.stickyCookie...)
}
