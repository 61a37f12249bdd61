// Package dispatch is a Traefik middleware plugin that sends a request carrying a
// gray-release lane header to that lane's servers; any other request goes on to the
// router's own Traefik service.
package dispatch

// Config is the dispatch middleware configuration, as written in Traefik's dynamic configuration.
// New gives every zero-valued field its default, so a zero Config is valid too (the root
// facade, whose dispatch section mapstructure allocates empty, relies on it).
type Config struct {
	// Header is the request header that carries the lane. Default X-Gray-Lane.
	Header string
	// Lanes maps a lane name to its servers.
	Lanes map[string]Lane
	// UnknownLane decides what happens to a request with no lane or a lane that is not
	// configured: "next" (default) passes it to the router's service, "reject" answers 400.
	UnknownLane string
	// Timeouts of the connections to the lane servers.
	Timeouts Timeouts
	// TLS configures the connections to https:// lane servers.
	TLS TLS
	// Health configures passive health checking of the lane servers.
	Health Health
	// ServedByHeader, when set, names a response header that tells the lane and server used.
	ServedByHeader string
	// FlushInterval is how often a streamed response is flushed to the client ("100ms");
	// "-1" flushes after every write. Default 100ms; event streams and responses without a
	// Content-Length always flush at once.
	FlushInterval string
}

// Lane is one lane's set of servers.
type Lane struct {
	// Servers are balanced by smooth weighted round robin.
	Servers []Server
	// PassHostHeader forwards the client's Host header. Default true, like Traefik.
	PassHostHeader *bool
	// Fallback takes a request when every server of the lane is down or failed:
	// "next" (default) is the router's own service, "none" answers 502, any other value
	// names another lane.
	Fallback string
	// Sticky, when set, keeps a client on the server that first answered it, by a cookie, like
	// the sticky sessions of a Traefik load balancer.
	Sticky *Sticky
}

// Sticky configures the sticky sessions of a lane.
type Sticky struct {
	// Cookie is the cookie that names the client's server.
	Cookie StickyCookie
}

// StickyCookie is the cookie of a lane's sticky sessions, with the field names of Traefik's
// sticky.cookie. Its value is a hash of the server's URL.
type StickyCookie struct {
	// Name is the cookie's name. Default graylane_server_<lane>.
	Name string
	// Secure sends the cookie over HTTPS only.
	Secure bool
	// HTTPOnly hides the cookie from scripts.
	HTTPOnly bool
	// SameSite is none, lax or strict; empty or default sends no SameSite attribute.
	SameSite string
	// MaxAge is the cookie's lifetime in seconds; 0 (default) makes it a session cookie.
	MaxAge int
	// Path is the cookie's path. Default /.
	Path *string
	// Domain is the cookie's domain; empty (default) makes it a host-only cookie.
	Domain string
}

// Server is one upstream server of a lane.
type Server struct {
	// URL is the server's base URL, e.g. http://10.0.0.5:8080.
	URL string
	// Weight from 0 to 1000; 0 drains the server. Default 1.
	Weight *int
}

// Timeouts are durations such as "5s" or a number of seconds.
type Timeouts struct {
	// Dial bounds establishing a connection. Default 5s.
	Dial string
	// ResponseHeader bounds the wait for the response headers; 0 means no limit. Default 60s.
	ResponseHeader string
	// Idle is how long an idle keep-alive connection is kept. Default 90s.
	Idle string
}

// TLS configures the connections to https:// lane servers, like the TLS settings of a Traefik
// serversTransport. By default the servers' certificates are checked against the system's roots.
type TLS struct {
	// RootCAs lists the certificate authorities the servers' certificates are checked against,
	// instead of the system's roots: each entry is the path of a PEM file or PEM text.
	RootCAs []string
	// ServerName is the name sent for SNI and checked in the certificates. Default: the host
	// of the server URL.
	ServerName string
	// InsecureSkipVerify accepts any certificate. For tests only: it gives up the protection TLS
	// offers against a server that is not the one configured.
	InsecureSkipVerify bool
}

// Health configures passive health checking: a server that fails MaxFails times within
// Window is skipped for Cooldown.
type Health struct {
	// MaxFails is the number of failures that mark a server down; 0 turns checking off.
	// Default (nil) 3.
	MaxFails *int
	// Window is the period in which failures are counted. Default 10s.
	Window string
	// Cooldown is how long a server that is down is skipped. Default 15s.
	Cooldown string
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config {
	return &Config{
		Header:        "X-Gray-Lane",
		Lanes:         map[string]Lane{},
		UnknownLane:   "next",
		Timeouts:      Timeouts{Dial: "5s", ResponseHeader: "60s", Idle: "90s"},
		Health:        Health{Window: "10s", Cooldown: "15s"},
		FlushInterval: "100ms",
	}
}
