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

// lookupIdentity returns the user ID of req, or "" when it has none. A source whose value is
// empty or blank once trimmed, or longer than maxIDLen bytes, is skipped. The header, the usual
// source, is read here; the others in a function of their own, so that (under Yaegi) a request
// with the header does not pay for them.
func lookupIdentity(s *identitySource, req *http.Request) string {
	// The first value of the header only; a range costs fewer values than len and an index
	// under Yaegi, and the checks inline cost less than a call. v >= "!" costs what v != "" did
	// and also leaves to identityAfterHeader a value that begins with a blank (Go's HTTP/2
	// server, unlike its HTTP/1 server, does not trim header values), such as a blank one; a
	// check of the last byte would cost every request five allocations, so a blank after a value
	// stays. (The call there costs the requests that take the header nothing measurable, and a
	// request without the header nothing at all.)
	for _, v := range req.Header[s.header] {
		if v >= "!" && len(v) <= maxIDLen {
			return v
		}
		return identityAfterHeader(s, req, v) //nolint:staticcheck // SA4004: the first value only, on purpose
	}
	return identityBeyondHeader(s, req)
}

// identityAfterHeader returns the user ID of req when lookupIdentity did not take the first value
// of its identity header, v, as it is (empty, beginning with a blank, or too long): v trimmed,
// or the ID from the next sources.
func identityAfterHeader(s *identitySource, req *http.Request, v string) string {
	if v = usableID(v); v != "" {
		return v
	}
	return identityBeyondHeader(s, req)
}

// identityBeyondHeader returns the user ID of req from the cookie, query or JWT claim source.
// Each is read in a function of its own, so that (under Yaegi) a request pays only for the
// sources configured; each returns "" for a value that is empty, blank or longer than maxIDLen.
func identityBeyondHeader(s *identitySource, req *http.Request) string {
	if s.cookie != "" {
		if v := cookieID(s, req); v != "" {
			return v
		}
	}
	if s.query != "" {
		if v := queryID(s, req); v != "" {
			return v
		}
	}
	if s.jwtClaim != "" {
		return jwtID(s, req)
	}
	return ""
}

// cookieID returns the user ID of req from the cookie source, or "".
func cookieID(s *identitySource, req *http.Request) string {
	v, _ := cookieValue(req, s.cookie)
	return usableID(v)
}

// queryID returns the user ID of req from the query source, or "".
func queryID(s *identitySource, req *http.Request) string {
	v, _ := queryValue(req.URL.RawQuery, s.query)
	return usableID(v)
}

// jwtID returns the user ID of req from the JWT claim source, or "".
func jwtID(s *identitySource, req *http.Request) string {
	v, err := jwtClaim(headerValue(req.Header, "Authorization"), s.jwtClaim)
	if err != nil {
		return ""
	}
	return usableID(v)
}

// usableID returns v without the spaces, tabs, carriage returns and line feeds around it, which
// Go's server trims from header values but not from cookies, query parameters and claims; ""
// when that leaves nothing or more than maxIDLen bytes.
func usableID(v string) string {
	v = strings.Trim(v, " \t\r\n")
	if len(v) > maxIDLen {
		return ""
	}
	return v
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
