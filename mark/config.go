// Package mark is a Traefik middleware plugin that decides a request's gray-release lane
// (by user, app version, sticky percentage, URL, header, cookie, query or source address)
// and writes the lane name into a request header for dispatch, or any backend, to follow.
package mark

// Config is the mark middleware configuration, as written in Traefik's dynamic configuration.
// New gives every zero-valued field its default, so a zero Config is valid too (the root
// facade, whose mark section mapstructure allocates empty, relies on it).
type Config struct {
	// Header is the request header that carries the lane. Default X-Gray-Lane.
	Header string
	// Incoming says what to do with a lane header sent by the client:
	// "strip" (default) removes it, "keep" trusts it and skips the rules,
	// "trustedIPs" keeps it only when the direct peer is in TrustedIPs.
	Incoming string
	// TrustedIPs lists the CIDRs (or single addresses) whose lane header is kept with Incoming "trustedIPs".
	TrustedIPs []string
	// IPStrategy chooses the client IP that sourceIPs and Anonymous "ip" use, like the ipStrategy
	// of Traefik's ipAllowList. Unset, it is the direct peer. (TrustedIPs always checks the peer.)
	IPStrategy IPStrategy
	// Identity says where the user ID comes from; the first non-empty source wins,
	// in the order header, cookie, query, JWT claim.
	Identity Identity
	// Version says where the client app version comes from (header first, then query).
	Version VersionSource
	// Anonymous chooses the percentage key of a request with no identity:
	// "cookie" (default) issues a random ID in StickyCookie, "ip" uses the client IP,
	// "random" draws anew on each request, "none" never matches a percentage rule.
	Anonymous string
	// StickyCookie is the cookie that holds the anonymous ID with Anonymous "cookie".
	StickyCookie StickyCookie
	// RuleHeader, when set, names a response header that tells which rule matched.
	RuleHeader string
	// Rules are tried in order; the first rule whose conditions all hold decides the lane.
	Rules []Rule
	// DefaultLane is the lane of a request that no rule matched; empty means no lane.
	DefaultLane string
}

// IPStrategy chooses the client IP from X-Forwarded-For, for a Traefik behind proxies or load
// balancers whose addresses Traefik's entry point trusts (forwardedHeaders.trustedIPs; from
// other peers Traefik removes the header, so a client cannot forge it).
type IPStrategy struct {
	// Depth, when more than 0, takes the X-Forwarded-For entry at this position counted from the
	// right (1 = the last proxy's client). Fewer entries than Depth means no client IP.
	Depth int
	// ExcludedIPs (with Depth 0) takes the rightmost X-Forwarded-For entry that is not in these
	// CIDRs (or addresses): the proxies to skip.
	ExcludedIPs []string
	// IPv6Subnet, when more than 0, replaces an IPv6 client address by the first address of its
	// subnet of that many bits, so that the addresses one device rotates through count as one.
	IPv6Subnet int
}

// Identity lists where the user ID is read from. Empty fields are not consulted.
type Identity struct {
	// Header is a request header holding the user ID, e.g. X-User-Id.
	Header string
	// Cookie is a cookie holding the user ID.
	Cookie string
	// Query is a URL query parameter holding the user ID.
	Query string
	// JWTClaim is a claim of the Bearer token in the Authorization header. The token is
	// decoded, not verified: put mark behind the middleware that verifies it.
	JWTClaim string
}

// VersionSource lists where the client app version is read from.
type VersionSource struct {
	// Header is a request header holding the version, e.g. X-App-Version.
	Header string
	// Query is a URL query parameter holding the version.
	Query string
}

// StickyCookie configures the cookie that keeps an anonymous visitor in the same bucket.
type StickyCookie struct {
	// Name of the cookie. Default graylane_id.
	Name string
	// MaxAge is a duration ("720h") or a number of seconds. Default 720h.
	MaxAge string
	// Secure marks the cookie Secure. Default (nil) true.
	Secure *bool
	// HTTPOnly marks the cookie HttpOnly. Default (nil) true.
	HTTPOnly *bool
	// SameSite is Lax (default), Strict, None, or Default to leave the attribute out.
	SameSite string
}

// Rule is one lane rule. All the conditions it sets must hold for it to match.
type Rule struct {
	// Name identifies the rule in errors, in RuleHeader and as the default Salt.
	Name string
	// Lane is the lane a matching request is put in.
	Lane string
	// Users matches the identity exactly against this list.
	Users []string
	// Versions is a version constraint such as ">=2.3.0, <3.0.0 || 3.1.x".
	Versions string
	// Path matches the URL path.
	Path PathMatch
	// Methods lists the accepted HTTP methods.
	Methods []string
	// Headers maps request header names to required values ("*" means present).
	Headers map[string]string
	// Cookies maps cookie names to required values ("*" means present).
	Cookies map[string]string
	// Query maps query parameter names to required values ("*" means present).
	Query map[string]string
	// SourceIPs lists the CIDRs (or addresses) the client IP must be in.
	SourceIPs []string
	// Percent, from 0 to 100 with up to two decimals, is the share of keys that match.
	Percent *float64
	// Salt seeds the percentage bucket. Default: the rule's Name.
	Salt string
	// From is the RFC 3339 time the rule starts to apply.
	From string
	// Until is the RFC 3339 time the rule stops applying.
	Until string
	// Ramp raises the percentage in steps over time; when set it replaces Percent.
	Ramp []RampStep
}

// PathMatch matches the URL path. Set exactly one of its fields.
type PathMatch struct {
	// Prefix matches paths that start with it.
	Prefix string
	// Exact matches the path itself.
	Exact string
	// Contains matches paths that contain any one of its strings.
	Contains []string
	// Regex is a Go (RE2) regular expression the path must match.
	Regex string
}

// RampStep sets the rule's percentage from At on, until the next step.
type RampStep struct {
	// At is an RFC 3339 time.
	At string
	// Percent applies from At on.
	Percent float64
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config {
	return &Config{
		Header:    "X-Gray-Lane",
		Incoming:  "strip",
		Anonymous: "cookie",
		StickyCookie: StickyCookie{
			Name:     "graylane_id",
			MaxAge:   "720h",
			SameSite: "Lax",
		},
	}
}
