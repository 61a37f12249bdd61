package mark

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Percentage keys of a request with no identity.
const (
	anonymousCookie = "cookie"
	anonymousIP     = "ip"
	anonymousRandom = "random"
	anonymousNone   = "none"
)

// maxAgeLimit is the longest cookie lifetime accepted, in seconds (about 68 years).
const maxAgeLimit = math.MaxInt32

// anonymousIDLen is the length of an anonymous ID: 16 random bytes in lower-case hex.
const anonymousIDLen = 32

// anonymousPolicy is the compiled Anonymous and StickyCookie configuration.
type anonymousPolicy struct {
	mode       string // anonymousCookie, anonymousIP, anonymousRandom or anonymousNone
	cookieName string
	attributes string // "; Path=/; Max-Age=…" and so on, appended to "name=id" in Set-Cookie
	clientIP   *clientIPStrategy
}

// withDefaults returns c with each unset field taken from def; Secure and HTTPOnly default to true.
func (c StickyCookie) withDefaults(def StickyCookie) StickyCookie {
	if c.Name == "" {
		c.Name = def.Name
	}
	if c.MaxAge == "" {
		c.MaxAge = def.MaxAge
	}
	if c.SameSite == "" {
		c.SameSite = def.SameSite
	}
	yes := true
	if c.Secure == nil {
		c.Secure = &yes
	}
	if c.HTTPOnly == nil {
		c.HTTPOnly = &yes
	}
	return c
}

// newAnonymousPolicy compiles the anonymous mode and the sticky cookie, which is checked whatever
// the mode so that a mistake shows at once.
func newAnonymousPolicy(mode string, c StickyCookie) (anonymousPolicy, error) {
	k := anonymousPolicy{mode: strings.ToLower(mode), cookieName: c.Name}
	switch k.mode {
	case anonymousCookie, anonymousIP, anonymousRandom, anonymousNone:
	default:
		return k, fmt.Errorf("anonymous: %q: must be cookie, ip, random or none", mode)
	}
	if !isToken(c.Name) {
		return k, fmt.Errorf("stickyCookie.name: %q: not a valid cookie name", c.Name)
	}
	maxAge, err := parseMaxAge(c.MaxAge)
	if err != nil {
		return k, fmt.Errorf("stickyCookie.maxAge: %q: %w", c.MaxAge, err)
	}
	attributes := "; Path=/"
	if maxAge > 0 {
		attributes += "; Max-Age=" + strconv.FormatInt(maxAge, 10)
	}
	if *c.HTTPOnly {
		attributes += "; HttpOnly"
	}
	if *c.Secure {
		attributes += "; Secure"
	}
	switch strings.ToLower(c.SameSite) {
	case "lax":
		attributes += "; SameSite=Lax"
	case "strict":
		attributes += "; SameSite=Strict"
	case "none":
		if !*c.Secure {
			return k, fmt.Errorf("stickyCookie.sameSite: %q: needs secure, browsers drop SameSite=None cookies that are not Secure", c.SameSite)
		}
		attributes += "; SameSite=None"
	case "default":
	default:
		return k, fmt.Errorf("stickyCookie.sameSite: %q: must be Lax, Strict, None or Default", c.SameSite)
	}
	k.attributes = attributes
	return k, nil
}

// parseMaxAge parses a cookie lifetime, a duration such as "720h" or a number of seconds, into
// seconds. 0 makes a session cookie.
func parseMaxAge(s string) (int64, error) {
	if isNumeric(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > maxAgeLimit {
			return 0, errors.New("too large")
		}
		return n, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("must be a duration such as 720h or a number of seconds")
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	if d > 0 && d < time.Second {
		return 0, errors.New("must be at least 1s")
	}
	if d/time.Second > maxAgeLimit {
		return 0, errors.New("too large")
	}
	return int64(d / time.Second), nil
}

// anonymousKeyFor returns the percentage key of a request with no identity. In cookie mode it reuses the
// request's valid sticky cookie, or issues a new random ID on the response; ok is false in
// random and none modes, and when there is no key to be had. Each mode is a function of its own:
// under Yaegi, a request pays for the values of every branch of a function it calls.
func anonymousKeyFor(k *anonymousPolicy, rw http.ResponseWriter, req *http.Request) (string, bool) {
	if k.mode == anonymousCookie {
		return stickyKey(k, rw, req)
	}
	if k.mode == anonymousIP {
		return ipKey(k, req)
	}
	return "", false
}

// stickyKey returns the anonymous ID of the request's valid sticky cookie, or issues a new one.
func stickyKey(k *anonymousPolicy, rw http.ResponseWriter, req *http.Request) (string, bool) {
	if id, ok := cookieValue(req, k.cookieName); ok && validAnonymousID(id) {
		return id, true
	}
	if id, ok := laterStickyID(k, req); ok {
		return id, true
	}
	return issueAnonymousID(k, rw, req)
}

// laterStickyID returns a valid anonymous ID from a later cookie of the sticky name, when the
// first is not one: a browser sends every cookie of that name it holds (one of a longer path or
// of a parent domain first), and mark's own host-only one at Path=/ would never replace those.
func laterStickyID(k *anonymousPolicy, req *http.Request) (string, bool) {
	for _, c := range req.Cookies() {
		if c.Name == k.cookieName && validAnonymousID(c.Value) {
			return c.Value, true
		}
	}
	return "", false
}

// issueAnonymousID returns a new random anonymous ID and sets it in the sticky cookie on rw. It
// also adds the cookie to req, as the client will send it from now on, so that a later mark
// middleware (in the same chain, or at an inner gateway) uses this ID instead of issuing a
// second one whose cookie would replace this one in the browser.
func issueAnonymousID(k *anonymousPolicy, rw http.ResponseWriter, req *http.Request) (string, bool) {
	id, ok := newAnonymousID()
	if ok {
		rw.Header().Add("Set-Cookie", k.cookieName+"="+id+k.attributes)
		addCookie(req.Header, k.cookieName+"="+id)
	}
	return id, ok
}

// addCookie adds the cookie pair to the request header h: to its last Cookie line, or as a new
// line. (Request.AddCookie would keep only the first of several Cookie lines.)
func addCookie(h http.Header, pair string) {
	if lines := h["Cookie"]; len(lines) > 0 {
		lines[len(lines)-1] += "; " + pair
		return
	}
	h["Cookie"] = []string{pair}
}

// ipKey returns the client IP of req as its percentage key.
func ipKey(k *anonymousPolicy, req *http.Request) (string, bool) {
	ip, ok := clientIP(k.clientIP, req)
	if !ok {
		return "", false
	}
	return ip.String(), true
}

// newAnonymousID returns a new random anonymous ID.
func newAnonymousID() (string, bool) {
	var b [anonymousIDLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false
	}
	return hex.EncodeToString(b[:]), true
}

// validAnonymousID reports whether id has the form of an ID this middleware issues: anonymousIDLen
// lower-case hexadecimal digits. (A compiled strings call rather than a loop: fewer
// values for Yaegi.)
func validAnonymousID(id string) bool {
	return len(id) == anonymousIDLen && strings.Trim(id, "0123456789abcdef") == ""
}
