package dispatch

import (
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// server is one upstream server of a lane.
type server struct {
	url      *url.URL
	key      string // the URL as text: the key of the server's passive health record
	index    int    // position in the lane's servers
	weight   int    // 0 means drained
	servedBy string // served-by header value: "<lane> <url>"
	proxy    *httputil.ReverseProxy
}

// balancer picks a lane's servers by smooth weighted round robin, the algorithm of nginx and of
// Traefik's weighted round robin: every pick adds each available server's weight to its current
// weight, takes the server with the highest current weight and subtracts the total weight from
// it. Weights 3:1 give the sequence a a b a, spread as evenly as the weights allow.
type balancer struct {
	mu      sync.Mutex
	servers []*server
	current []int // current weights, guarded by mu
}

// newBalancer returns a balancer over servers.
func newBalancer(servers []*server) *balancer {
	return &balancer{servers: servers, current: make([]int, len(servers))}
}

// pick returns the next server that is neither drained nor down, or nil when there is none.
// Yaegi makes every function call on the request path costly, so the health check is inline and
// looks at the health table only when that holds a record.
func (b *balancer) pick(health *healthPolicy) *server {
	checking := health.maxFails > 0 && atomic.LoadInt64(&healthRecords.size) > 0
	var now time.Time
	if checking {
		now = time.Now()
	}
	b.mu.Lock()
	best := -1
	total := 0
	for i := 0; i < len(b.servers); i++ {
		s := b.servers[i]
		if s.weight == 0 || checking && healthRecords.isDown(s.key, now) {
			continue
		}
		b.current[i] += s.weight
		total += s.weight
		if best < 0 || b.current[i] > b.current[best] {
			best = i
		}
	}
	if best < 0 {
		b.mu.Unlock()
		return nil
	}
	b.current[best] -= total
	s := b.servers[best]
	b.mu.Unlock()
	return s
}

// after returns the server to retry once s failed: the next one in the lane's order that is
// neither drained nor down, stopping before first (the server the request was sent to first) so
// that no server is tried twice. It returns nil when every server has been tried.
func (b *balancer) after(s *server, first int, health *healthPolicy) *server {
	checking := health.maxFails > 0
	now := time.Now()
	n := len(b.servers)
	for i := s.index + 1; ; i++ {
		next := b.servers[i%n]
		if next.index == first {
			return nil
		}
		if next.weight > 0 && !(checking && healthRecords.isDown(next.key, now)) {
			return next
		}
	}
}
