package mark

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Limits beyond which a user ID or a token is ignored, as if absent.
const (
	maxIDLen    = 256
	maxTokenLen = 8 << 10
)

// identitySource reads the user ID from the first of its sources that holds one.
type identitySource struct {
	header   string // canonical header key, or ""
	cookie   string
	query    string
	jwtClaim string
}

// validate checks the identity source names.
func (id *Identity) validate() error {
	if err := checkHeaderName(id.Header); err != nil {
		return fmt.Errorf("header: %q: %w", id.Header, err)
	}
	if id.Cookie != "" && !isToken(id.Cookie) {
		return fmt.Errorf("cookie: %q: not a valid cookie name", id.Cookie)
	}
	return nil
}

// newIdentitySource compiles the Identity configuration.
func newIdentitySource(id Identity) identitySource {
	s := identitySource{cookie: id.Cookie, query: id.Query, jwtClaim: id.JWTClaim}
	if id.Header != "" {
		s.header = http.CanonicalHeaderKey(id.Header)
	}
	return s
}

// lookup returns the user ID of req, or "" when it has none. A source whose value is empty or
// longer than maxIDLen bytes is skipped.
func (s *identitySource) lookup(req *http.Request) string {
	if s.header != "" {
		if v := headerValue(req.Header, s.header); validID(v) {
			return v
		}
	}
	if s.cookie != "" {
		if v, _ := cookieValue(req.Header, s.cookie); validID(v) {
			return v
		}
	}
	if s.query != "" {
		if v, _ := queryValue(req.URL.RawQuery, s.query); validID(v) {
			return v
		}
	}
	if s.jwtClaim != "" {
		if v, err := jwtClaim(headerValue(req.Header, "Authorization"), s.jwtClaim); err == nil && validID(v) {
			return v
		}
	}
	return ""
}

// validID reports whether v can serve as a user ID.
func validID(v string) bool {
	return v != "" && len(v) <= maxIDLen
}

// headerValue returns the first value of the header with canonical key key.
func headerValue(h http.Header, key string) string {
	return firstOf(h[key])
}

// cookieValue returns the value of the first valid cookie called name in the Cookie headers,
// parsed like net/http's Request.Cookie but without allocating.
func cookieValue(h http.Header, name string) (string, bool) {
	lines := h["Cookie"]
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		for line != "" {
			part := line
			if j := strings.IndexByte(line, ';'); j >= 0 {
				part, line = line[:j], line[j+1:]
			} else {
				line = ""
			}
			part = trimOWS(part)
			if part == "" {
				continue
			}
			key, value := part, ""
			if j := strings.IndexByte(part, '='); j >= 0 {
				key, value = part[:j], part[j+1:]
			}
			if trimOWS(key) != name {
				continue
			}
			if v, ok := cookieText(value); ok {
				return v, true
			}
		}
	}
	return "", false
}

// cookieText unquotes a cookie value and checks its characters, as net/http does.
func cookieText(v string) (string, bool) {
	if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == ';' || c == '\\' {
			return "", false
		}
	}
	return v, true
}

// trimOWS trims the ASCII white space around s, like textproto.TrimString.
func trimOWS(s string) string {
	for s != "" && isSpace(s[0]) {
		s = s[1:]
	}
	for s != "" && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// isSpace reports whether c is ASCII white space.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// queryValue returns the first value of the query parameter name in rawQuery, parsed like
// url.ParseQuery (pairs holding ';' or a bad escape are skipped) but allocating only to unescape.
func queryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		pair := rawQuery
		if j := strings.IndexByte(rawQuery, '&'); j >= 0 {
			pair, rawQuery = rawQuery[:j], rawQuery[j+1:]
		} else {
			rawQuery = ""
		}
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		key, value := pair, ""
		if j := strings.IndexByte(pair, '='); j >= 0 {
			key, value = pair[:j], pair[j+1:]
		}
		key, err := url.QueryUnescape(key)
		if err != nil || key != name {
			continue
		}
		if value, err = url.QueryUnescape(value); err == nil {
			return value, true
		}
	}
	return "", false
}

// jwtClaim returns the claim called name from the payload of the Bearer token in authorization,
// without verifying the token. A string claim is returned as is, a number in its JSON text form;
// any other claim, or a token that is not a well-formed JWT, is an error.
func jwtClaim(authorization, name string) (string, error) {
	if len(authorization) < 7 || !strings.EqualFold(authorization[:7], "bearer ") {
		return "", errors.New("no Bearer token")
	}
	token := strings.TrimSpace(authorization[7:])
	if token == "" || len(token) > maxTokenLen {
		return "", errors.New("empty or oversized token")
	}
	first := strings.IndexByte(token, '.')
	last := strings.LastIndexByte(token, '.')
	if first < 0 || first == last || strings.IndexByte(token[first+1:last], '.') >= 0 {
		return "", errors.New("a JWT has three parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(token[first+1:last], "="))
	if err != nil {
		return "", errors.New("bad base64url payload")
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", errors.New("bad JSON payload")
	}
	raw := claims[name]
	if len(raw) == 0 {
		return "", errors.New("no such claim")
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return string(raw), nil
	}
	return "", errors.New("claim is neither a string nor a number")
}
