package component

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/internal/testcluster"
	"github.com/allot-dev/allot/pkg/leases"
)

// claimHistory is etcd's history of the claims and moves from the moment
// it is made (see testcluster.History). Tests read from it which targets
// moved, failed over or stayed, and when, whoever did it.
type claimHistory struct{ *testcluster.History }

// watchClaims starts a claim history; it stops at the end of the test.
func (c *cluster) watchClaims() claimHistory {
	c.t.Helper()
	return claimHistory{testcluster.WatchHistory(c.t, c.cli, c.ks)}
}

// ownersAt replays the history up to t: the owner of every claimed target.
func (h claimHistory) ownersAt(tb testing.TB, t time.Time) map[string]string {
	tb.Helper()
	own := h.Start()
	for _, ch := range h.Changes(tb) {
		if ch.At.After(t) {
			break
		}
		switch ch.Kind {
		case testcluster.ClaimPut:
			own[ch.Target] = ch.Owner
		case testcluster.ClaimDeleted:
			delete(own, ch.Target)
		}
	}
	return own
}

// completedMoves pairs every claim put with the move deleted in the same
// revision (the takeover transaction does both) and returns the completed
// moves as handoffs, the start being when the move was announced.
func (h claimHistory) completedMoves(t testing.TB) []handoff {
	t.Helper()
	chs := h.Changes(t)
	owner := h.Start()
	started := map[string]time.Time{}
	ended := map[int64]map[string]leases.Move{} // rev → target → move deleted
	for _, ch := range chs {
		if ch.Kind == testcluster.MoveEnded {
			if ended[ch.Rev] == nil {
				ended[ch.Rev] = map[string]leases.Move{}
			}
			ended[ch.Rev][ch.Target] = ch.Move
		}
	}
	var out []handoff
	for _, ch := range chs {
		switch ch.Kind {
		case testcluster.MoveStarted:
			started[ch.Target] = ch.At
		case testcluster.ClaimDeleted:
			delete(owner, ch.Target)
		case testcluster.ClaimPut:
			if m, ok := ended[ch.Rev][ch.Target]; ok {
				require.Equal(t, m.To, ch.Owner, "target %s: the move's deletion rewrote the claim to another owner", ch.Target)
				require.Equal(t, m.From, owner[ch.Target], "target %s: moved from someone else than the move's source", ch.Target)
				st, ok := started[ch.Target]
				require.True(t, ok, "target %s: completed a move the history did not see start", ch.Target)
				out = append(out, handoff{id: ch.Target, from: m.From, to: m.To, start: st, end: ch.At})
			}
			owner[ch.Target] = ch.Owner
		}
	}
	return out
}

// pending is the moves announced in etcd and not ended at the end of the
// history so far.
func (h claimHistory) pending(t testing.TB) map[string]leases.Move {
	t.Helper()
	out := map[string]leases.Move{}
	for _, ch := range h.Changes(t) {
		switch ch.Kind {
		case testcluster.MoveStarted:
			out[ch.Target] = ch.Move
		case testcluster.MoveEnded:
			delete(out, ch.Target)
		}
	}
	return out
}

// monitor samples, every monitorEvery while a test runs, who owns each of
// a set of targets: the claim in etcd and what every scraper says it
// scrapes. A target is served when its claim's owner is alive and scrapes
// it; it is doubly owned when two scrapers say they scrape it. The monitor
// keeps the longest spell of each; a target whose server crashed counts as
// unserved from the moment of the crash, not from when etcd noticed.
type monitor struct {
	c       *cluster
	ids     []string
	members []*member
	cancel  context.CancelFunc
	done    chan struct{}

	mu         sync.Mutex
	down       map[string]time.Time // scraper → when it crashed
	servedBy   map[string]string    // target → who served it at the last sample
	unowned    map[string]time.Time // target → unserved since
	double     map[string]time.Time // target → doubly owned since
	maxUnowned spell
	maxDouble  spell
	samples    int
	errs       int
}

// spell is the longest time a target was in some state, and what the
// monitor saw last then.
type spell struct {
	d      time.Duration
	target string
	why    string
}

func (s spell) String() string {
	if s.target == "" {
		return "0s"
	}
	return fmt.Sprintf("%s (target %s: %s)", s.d.Round(time.Millisecond), s.target, s.why)
}

// monitorEvery is how often the monitor samples: a few times per scrape
// interval, with room for the rest of the test on two cores.
const monitorEvery = 50 * time.Millisecond

// monitorOwnership starts a monitor of targets ids as owned by members; it
// stops at the end of the test or at check.
func (c *cluster) monitorOwnership(ids []string, members ...*member) *monitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{
		c: c, ids: ids, members: members, cancel: cancel, done: make(chan struct{}),
		down: map[string]time.Time{}, servedBy: map[string]string{},
		unowned: map[string]time.Time{}, double: map[string]time.Time{},
	}
	go m.run(ctx)
	c.t.Cleanup(m.stop)
	return m
}

// crashed notes that scraper id crashes now; call it just before.
func (m *monitor) crashed(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down[id] = time.Now()
}

func (m *monitor) run(ctx context.Context) {
	defer close(m.done)
	tick := time.NewTicker(monitorEvery)
	defer tick.Stop()
	for {
		m.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (m *monitor) sample(ctx context.Context) {
	cs, _, err := leases.ListClaims(ctx, m.c.cli, m.c.ks)
	if ctx.Err() != nil {
		return // stopping
	}
	if err != nil {
		m.mu.Lock()
		m.errs++
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	down := maps.Clone(m.down)
	m.mu.Unlock()
	views := map[string]map[string]bool{} // scraper → targets it scrapes
	for _, mb := range m.members {
		if _, crashed := down[mb.s.ID()]; crashed {
			// A crashed process scrapes nothing. Its stand-in here shut
			// its gate at once (the sink checks that), but its view
			// empties only when Run returns.
			continue
		}
		v := map[string]bool{}
		for _, id := range mb.owned() {
			v[id] = true
		}
		views[mb.s.ID()] = v
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples++
	for _, id := range m.ids {
		cl, claimed := cs[id]
		var scrapers []string
		for sid, v := range views {
			if v[id] {
				scrapers = append(scrapers, sid)
			}
		}
		slices.Sort(scrapers)
		why := fmt.Sprintf("claimed by %q (claim exists: %v), scraped by %v", cl.Owner, claimed, scrapers)
		_, ownerDown := m.down[cl.Owner]
		if claimed && !ownerDown && views[cl.Owner][id] {
			m.servedBy[id] = cl.Owner
			delete(m.unowned, id)
		} else {
			since, ok := m.unowned[id]
			if !ok {
				since = now
				if d, dead := m.down[m.servedBy[id]]; dead && d.Before(since) {
					since = d
				}
				m.unowned[id] = since
			}
			if d := now.Sub(since); d > m.maxUnowned.d {
				m.maxUnowned = spell{d: d, target: id, why: why}
			}
		}
		if len(scrapers) > 1 {
			since, ok := m.double[id]
			if !ok {
				since = now
				m.double[id] = since
			}
			if d := now.Sub(since); d > m.maxDouble.d {
				m.maxDouble = spell{d: d, target: id, why: why}
			}
		} else {
			delete(m.double, id)
		}
	}
}

func (m *monitor) stop() {
	m.cancel()
	<-m.done
}

// check stops the monitor and requires that no target was unserved for
// longer than unowned nor doubly owned for longer than double.
func (m *monitor) check(t testing.TB, unowned, double time.Duration) {
	t.Helper()
	m.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	t.Logf("ownership monitor: %d samples (%d failed reads); longest unserved %s; longest doubly owned %s",
		m.samples, m.errs, m.maxUnowned, m.maxDouble)
	require.Greater(t, m.samples, 10, "the monitor barely sampled")
	require.LessOrEqual(t, m.maxUnowned.d, unowned, "a target was unserved too long: %s", m.maxUnowned)
	require.LessOrEqual(t, m.maxDouble.d, double, "a target was owned by two scrapers too long: %s", m.maxDouble)
}
