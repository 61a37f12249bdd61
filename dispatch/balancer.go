package dispatch

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// server is one upstream server of a lane. Its proxy's ModifyResponse (a closure over it) and
// ErrorHandler (a method value) are bound to it once in New, so they know the server without any
// per-request state.
type server struct {
	host     string // the URL's host (and port): the Host sent when passHostHeader is false
	key      string // the normalised URL (see serverKey): the key of its passive health record
	lane     string // the lane's name, for the error log
	index    int    // position in the lane's servers
	weight   int    // 0 means drained
	current  int    // smooth weighted round robin's current weight, guarded by the balancer's mu
	health   *healthPolicy
	servedBy []string // served-by header value, "<lane> <url>"; nil when servedByHeader is off
	// servedByKey is the canonical served-by header name.
	servedByKey string
	// proxy is the server's *httputil.ReverseProxy, kept as an http.Handler: under Yaegi a call
	// through the interface costs one allocation less than one of the pointer's method.
	proxy http.Handler
	// In a sticky lane, stickyName and stickyValue are the cookie that names the server, and
	// stickyCookie the Set-Cookie header value that sets it (see makeSticky).
	stickyName, stickyValue string
	stickyCookie            []string
}

// balancer picks a lane's servers by smooth weighted round robin, the algorithm of nginx and of
// Traefik's weighted round robin: every pick adds each available server's weight to its current
// weight, takes the server with the highest current weight and subtracts the total weight from
// it. Weights 3:1 give the sequence a a b a, spread as evenly as the weights allow.
type balancer struct {
	mu       sync.Mutex
	servers  []*server // all of the lane's servers, in configuration order
	weighted []*server // the servers whose weight is not 0
	only     *server   // the one server whose weight is not 0, or nil when there are more or none
	// schedule is one period of the sequence smooth weighted round robin picks from weighted,
	// computed in New when it has at most maxSchedule entries; turn, used atomically through next,
	// counts the picks (starting from ^0, so that the first pick takes schedule[0]).
	schedule []*server
	turn     uint64
	length   uint64  // len(schedule)
	next     *uint64 // &turn, one value fewer to compute for Yaegi
	checking bool    // passive health checking is on
}

// maxSchedule bounds the length of a balancer's schedule (8 KiB of pointers).
const maxSchedule = 1024

// newBalancer returns a balancer over servers.
func newBalancer(servers []*server, health *healthPolicy) *balancer {
	b := &balancer{servers: servers, checking: health.maxFails > 0}
	for i := 0; i < len(servers); i++ {
		if servers[i].weight > 0 {
			b.weighted = append(b.weighted, servers[i])
		}
	}
	if len(b.weighted) == 1 {
		b.only = b.weighted[0]
	}
	if n := period(b.weighted); len(b.weighted) > 1 && n <= maxSchedule {
		// One period of picks leaves every current weight where it started, at 0.
		b.schedule = make([]*server, n)
		for i := range b.schedule {
			b.schedule[i] = step(b.weighted, false)
		}
		b.turn = ^uint64(0)
		b.next = &b.turn
		b.length = uint64(n)
	}
	return b
}

// period returns the length of the sequence smooth weighted round robin repeats over servers: the
// sum of their weights divided by the weights' greatest common divisor.
func period(servers []*server) int {
	divisor, sum := 0, 0
	for _, s := range servers {
		a, b := s.weight, divisor
		for b != 0 {
			a, b = b, a%b
		}
		divisor = a
		sum += s.weight
	}
	if divisor == 0 {
		return 0
	}
	return sum / divisor
}

// pick returns the next server of a balancer of several servers to pick while the health table
// holds no record (serveLane takes the only one itself; pickServer calls pickAvailable otherwise,
// and pickSticky for a sticky lane). It and
// the other functions of the request path are plain functions, not methods, and compute few
// intermediate values: under Yaegi a method call costs several times a function call, and every
// value a function computes (taken branch or not) costs an allocation per call. A lane with a
// schedule takes its next entry, without a lock; another runs smooth weighted round robin without
// looking for servers that are down (the table holds no record).
func pick(b *balancer) *server {
	if b.schedule == nil {
		return stepLocked(b, false)
	}
	return b.schedule[atomic.AddUint64(b.next, 1)%b.length]
}

// pickAvailable returns the next server of b that is not down, or nil when there is none, while
// the health table holds records (of any lane: pickServer does not look whether b checks health),
// and for a sticky lane's client without a valid cookie.
// A lane with one server to pick takes it when it is not down, without a lock: smooth weighted
// round robin always picks it and keeps its current weight at 0. Other lanes are left to
// pickSeveral, whose values the one-server lanes thus do not pay for. (s is a named result: under
// Yaegi a declared variable is allocated again each time its declaration runs.)
func pickAvailable(b *balancer) (s *server) {
	s = b.only
	if s == nil {
		return pickSeveral(b, b.checking)
	}
	if b.checking && isDown(s.key) {
		return nil
	}
	return s
}

// pickSeveral returns the next server of b, a balancer of several servers to pick (or none), that
// is not down when checking, or nil when there is none. A lane with a schedule still takes its
// next entry when none of its servers is down. Otherwise smooth weighted round robin runs over the
// servers that are not down, under the lock, so that they share the requests in the ratio of
// their weights.
func pickSeveral(b *balancer, checking bool) *server {
	if b.schedule != nil && !anyDown(b.weighted, checking) {
		return b.schedule[atomic.AddUint64(b.next, 1)%b.length]
	}
	return stepLocked(b, checking)
}

// stepLocked makes one pick of smooth weighted round robin over b's servers under b's lock. (Out of
// pickSeveral, which needs it only for a lane without a schedule or with a server down.)
func stepLocked(b *balancer, checking bool) (s *server) {
	b.mu.Lock()
	s = step(b.weighted, checking)
	b.mu.Unlock()
	return s
}

// anyDown reports whether one of servers is down, when checking. While only other servers have
// health records, as is usual, it looks them up under one lock (anyRecord), and only otherwise
// asks whether each is down (recordsDown).
func anyDown(servers []*server, checking bool) bool {
	return checking && anyRecord(servers) && recordsDown(servers)
}

// recordsDown reports whether one of servers is down.
func recordsDown(servers []*server) bool {
	for _, s := range servers {
		if isDown(s.key) {
			return true
		}
	}
	return false
}

// step makes one pick of smooth weighted round robin over servers, skipping those that are down
// when checking, and returns nil when every server is down. The caller holds the balancer's lock
// (or builds it).
func step(servers []*server, checking bool) *server {
	var best *server
	most, total := minInt, 0
	for _, s := range servers {
		if checking && isDown(s.key) {
			continue
		}
		s.current += s.weight
		total += s.weight
		if s.current > most {
			best, most = s, s.current
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// minInt is the smallest int, below any current weight.
const minInt = -1 << (strconv.IntSize - 1)

// after returns the server to retry once s failed: the next one in the lane's order that is
// neither drained nor down, stopping before first (the server the request was sent to first) so
// that no server is tried twice. It returns nil when every server has been tried.
func after(b *balancer, s, first *server) *server {
	n := len(b.servers)
	for i := s.index + 1; ; i++ {
		next := b.servers[i%n]
		if next == first {
			return nil
		}
		if available(b, next) {
			return next
		}
	}
}

// available reports whether s, a server of b, may take a request: it is neither drained nor down.
func available(b *balancer, s *server) bool {
	return s.weight > 0 && !(b.checking && isDown(s.key))
}
