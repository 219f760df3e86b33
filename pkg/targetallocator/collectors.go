package targetallocator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allot-dev/allot/pkg/leases"
)

// collector is one OTel Collector that polls this API with its
// collector_id. The API holds a lease for it (a leases.Session with TTL
// CollectorTTL) with the collector's member entry and its claims on it. The
// session renews itself while this process lives; the API revokes it when
// the collector's polls stop for CollectorTTL, and if this process dies the
// lease expires CollectorTTL later on its own. Either way the member entry
// and the claims vanish together and the targets go to the other members.
type collector struct {
	id         string
	addr       string
	registered time.Time
	sess       *leases.Session
	claims     *leases.Claims
	member     leases.Member
	lastPoll   atomic.Int64 // unix nanoseconds
	// firstRound is the reconcile round that claims its first targets:
	// polls wait for it, so that none of its first answers (one per job,
	// concurrent) comes before its share is claimed.
	firstRound uint64
}

func (c *collector) touch(now time.Time) { c.lastPoll.Store(now.UnixNano()) }

func (c *collector) last() time.Time { return time.Unix(0, c.lastPoll.Load()) }

// registration is an open of a collector's session in progress; concurrent
// first polls of one collector (one per job) wait for the same one.
type registration struct {
	done chan struct{}
	c    *collector
	err  error
}

// registry holds the collectors served by this process.
type registry struct {
	mu       sync.Mutex
	byID     map[string]*collector
	inflight map[string]*registration
	// expired remembers collectors this process let go, so that placement
	// leaves them out before the member watch reports their entries gone.
	expired map[string]time.Time
}

func newRegistry() *registry {
	return &registry{
		byID:     map[string]*collector{},
		inflight: map[string]*registration{},
		expired:  map[string]time.Time{},
	}
}

// errNotRunning is returned for polls that arrive before Run or after it.
var errNotRunning = errors.New("target allocator: not running")

// ensure returns collector id, renewing its poll time, or registers it:
// open is started in its own goroutine (the lease outlives the request)
// and ensure waits for it as long as ctx allows. fresh says the collector
// was (or is being) registered by this call or a concurrent one, so the
// caller should wait for its targets to be claimed.
func (r *registry) ensure(ctx context.Context, id string, now time.Time, start func(id string, reg *registration)) (c *collector, fresh bool, err error) {
	r.mu.Lock()
	if c, ok := r.byID[id]; ok {
		if c.sess.Err() == nil {
			c.touch(now)
			r.mu.Unlock()
			return c, false, nil
		}
		delete(r.byID, id) // its session was lost: register anew
	}
	reg, ok := r.inflight[id]
	if !ok {
		reg = &registration{done: make(chan struct{})}
		r.inflight[id] = reg
	}
	r.mu.Unlock()
	if !ok {
		start(id, reg) // it may finish reg at once, which takes r.mu
	}
	select {
	case <-ctx.Done():
		return nil, true, fmt.Errorf("register collector %s: %w", id, ctx.Err())
	case <-reg.done:
	}
	if reg.err != nil {
		return nil, true, reg.err
	}
	reg.c.touch(now)
	return reg.c, true, nil
}

// finish ends a registration started by ensure. round requests a
// reconcile round; it is called with r.mu held, after c is in the
// registry, so that the round it names sees c.
func (r *registry) finish(id string, reg *registration, c *collector, err error, round func() uint64) {
	r.mu.Lock()
	delete(r.inflight, id)
	if err == nil {
		r.byID[id] = c
		delete(r.expired, id)
		c.firstRound = round()
	}
	reg.c, reg.err = c, err
	r.mu.Unlock()
	close(reg.done)
}

// expire removes the collectors whose polls stopped ttl ago, or whose
// session was lost, and returns them; the caller ends their sessions.
func (r *registry) expire(now time.Time, ttl time.Duration) (idle, lost []*collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, c := range r.byID {
		switch {
		case c.sess.Err() != nil:
			lost = append(lost, c)
		case now.Sub(c.last()) > ttl:
			idle = append(idle, c)
		default:
			continue
		}
		delete(r.byID, id)
		r.expired[id] = now
	}
	for id, at := range r.expired {
		if now.Sub(at) > ttl {
			delete(r.expired, id)
		}
	}
	return idle, lost
}

// snapshot returns the live collectors by ID and the IDs recently let go.
func (r *registry) snapshot() (map[string]*collector, map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*collector, len(r.byID))
	for id, c := range r.byID {
		if c.sess.Err() == nil {
			out[id] = c
		}
	}
	gone := make(map[string]bool, len(r.expired))
	for id := range r.expired {
		gone[id] = true
	}
	return out, gone
}

// drain removes every collector and returns them.
func (r *registry) drain() []*collector {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*collector, 0, len(r.byID))
	for id, c := range r.byID {
		out = append(out, c)
		delete(r.byID, id)
	}
	return out
}

// Collector describes a collector served by this API, for status pages.
type Collector struct {
	ID         string    `json:"id"`
	Addr       string    `json:"addr"`
	Registered time.Time `json:"registered"`
	LastPoll   time.Time `json:"last_poll"`
	// Targets is the number of targets it owns by its claims.
	Targets int `json:"targets"`
}

// Collectors lists the collectors this process serves, sorted by ID.
func (a *API) Collectors() []Collector {
	cs, _ := a.reg.snapshot()
	counts := make(map[string]int, len(cs))
	a.mir.mu.RLock()
	for _, cl := range a.mir.claims {
		if _, ok := cs[cl.Owner]; ok {
			counts[cl.Owner]++
		}
	}
	a.mir.mu.RUnlock()
	out := make([]Collector, 0, len(cs))
	for id, c := range cs {
		out = append(out, Collector{ID: id, Addr: c.addr, Registered: c.registered, LastPoll: c.last(), Targets: counts[id]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
