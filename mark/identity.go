package mark

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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

// lookupIdentity returns the user ID of req, or "" when it has none. A source whose value is empty or
// longer than maxIDLen bytes is skipped. The header, the usual source, is read here; the others in
// a function of their own, so that (under Yaegi) a request with the header does not pay for them.
func lookupIdentity(s *identitySource, req *http.Request) string {
	// The first value of the header only; a range costs fewer values than len and an index
	// under Yaegi, and validID inline costs less than a call.
	for _, v := range req.Header[s.header] {
		if v != "" && len(v) <= maxIDLen {
			return v
		}
		break //nolint:staticcheck // SA4004: the first value only, on purpose
	}
	return identityBeyondHeader(s, req)
}

// identityBeyondHeader returns the user ID of req from the cookie, query or JWT claim source.
func identityBeyondHeader(s *identitySource, req *http.Request) string {
	if s.cookie != "" {
		if v, _ := cookieValue(req, s.cookie); validID(v) {
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
