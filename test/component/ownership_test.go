package component

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

// claimHistory follows claims/ and moves/ in etcd from the moment it is
// made and keeps every change with the time the test saw it. Tests read
// from it which targets moved, failed over or stayed, and when, whoever
// did it: a rebalancer that was killed cannot tell which of its moves
// completed after it lost etcd, and the one after it never knew of them.
type claimHistory struct {
	ks     leases.Keyspace
	start  map[string]string // target → owner when the history began
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changes []claimChange
	err     error
}

type changeKind int

const (
	claimPut changeKind = iota
	claimDeleted
	moveStarted
	moveEnded
)

// claimChange is one event under claims/ or moves/.
type claimChange struct {
	kind   changeKind
	at     time.Time
	rev    int64
	target string
	// owner: the claim's owner after a put, before a deletion.
	owner string
	// move: the move started, or the move that ended.
	move leases.Move
}

// watchClaims starts a claim history; it stops at the end of the test.
func (c *cluster) watchClaims() *claimHistory {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := c.cli.Get(ctx, c.ks.Claims(), clientv3.WithPrefix())
	require.NoError(c.t, err)
	h := &claimHistory{ks: c.ks, start: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	for _, kv := range resp.Kvs {
		var v leases.ClaimValue
		require.NoError(c.t, json.Unmarshal(kv.Value, &v))
		h.start[strings.TrimPrefix(string(kv.Key), c.ks.Claims())] = v.Owner
	}
	// Claims and moves share the keyspace's prefix; one watch sees both
	// sides of a takeover transaction in the same revision.
	prefix := strings.TrimSuffix(c.ks.Claims(), "claims/")
	wc := c.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(resp.Header.Revision+1))
	go h.run(wc)
	c.t.Cleanup(h.stop)
	return h
}

func (h *claimHistory) run(wc clientv3.WatchChan) {
	defer close(h.done)
	for resp := range wc {
		now := time.Now()
		if err := resp.Err(); err != nil {
			h.fail(fmt.Errorf("claim history watch: %w", err))
			return
		}
		for _, ev := range resp.Events {
			ch, ok, err := h.decode(ev)
			if err != nil {
				h.fail(err)
				return
			}
			if ok {
				ch.at = now
				h.mu.Lock()
				h.changes = append(h.changes, ch)
				h.mu.Unlock()
			}
		}
	}
}

func (h *claimHistory) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

func (h *claimHistory) decode(ev *clientv3.Event) (claimChange, bool, error) {
	key := string(ev.Kv.Key)
	ch := claimChange{rev: ev.Kv.ModRevision}
	put := ev.Type == clientv3.EventTypePut
	kv := ev.Kv
	if !put {
		kv = ev.PrevKv
	}
	switch {
	case strings.HasPrefix(key, h.ks.Claims()):
		ch.target = strings.TrimPrefix(key, h.ks.Claims())
		ch.kind = claimPut
		if !put {
			ch.kind = claimDeleted
		}
		if kv != nil {
			var v leases.ClaimValue
			if err := json.Unmarshal(kv.Value, &v); err != nil {
				return ch, false, fmt.Errorf("decode claim %s: %w", key, err)
			}
			ch.owner = v.Owner
		}
	case strings.HasPrefix(key, h.ks.Moves()):
		ch.target = strings.TrimPrefix(key, h.ks.Moves())
		ch.kind = moveStarted
		if !put {
			ch.kind = moveEnded
		}
		if kv != nil {
			if err := json.Unmarshal(kv.Value, &ch.move); err != nil {
				return ch, false, fmt.Errorf("decode move %s: %w", key, err)
			}
		}
	default:
		return ch, false, nil
	}
	return ch, true, nil
}

func (h *claimHistory) stop() {
	h.cancel()
	<-h.done
}

// snapshot returns the changes so far, failing the test if the watch broke.
func (h *claimHistory) snapshot(t testing.TB) []claimChange {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NoError(t, h.err)
	return slices.Clone(h.changes)
}

// ownersAt replays the history up to t: the owner of every claimed target.
func (h *claimHistory) ownersAt(tb testing.TB, t time.Time) map[string]string {
	tb.Helper()
	own := maps.Clone(h.start)
	for _, ch := range h.snapshot(tb) {
		if ch.at.After(t) {
			break
		}
		switch ch.kind {
		case claimPut:
			own[ch.target] = ch.owner
		case claimDeleted:
			delete(own, ch.target)
		}
	}
	return own
}

// completedMoves pairs every claim put with the move deleted in the same
// revision (the takeover transaction does both) and returns the completed
// moves as handoffs, the start being when the move was announced.
func (h *claimHistory) completedMoves(t testing.TB) []handoff {
	t.Helper()
	chs := h.snapshot(t)
	owner := maps.Clone(h.start)
	started := map[string]time.Time{}
	ended := map[int64]map[string]leases.Move{} // rev → target → move deleted
	for _, ch := range chs {
		if ch.kind == moveEnded {
			if ended[ch.rev] == nil {
				ended[ch.rev] = map[string]leases.Move{}
			}
			ended[ch.rev][ch.target] = ch.move
		}
	}
	var out []handoff
	for _, ch := range chs {
		switch ch.kind {
		case moveStarted:
			started[ch.target] = ch.at
		case claimDeleted:
			delete(owner, ch.target)
		case claimPut:
			if m, ok := ended[ch.rev][ch.target]; ok {
				require.Equal(t, m.To, ch.owner, "target %s: the move's deletion rewrote the claim to another owner", ch.target)
				require.Equal(t, m.From, owner[ch.target], "target %s: moved from someone else than the move's source", ch.target)
				st, ok := started[ch.target]
				require.True(t, ok, "target %s: completed a move the history did not see start", ch.target)
				out = append(out, handoff{id: ch.target, from: m.From, to: m.To, start: st, end: ch.at})
			}
			owner[ch.target] = ch.owner
		}
	}
	return out
}

// pending is the moves announced in etcd and not ended at the end of the
// history so far.
func (h *claimHistory) pending(t testing.TB) map[string]leases.Move {
	t.Helper()
	out := map[string]leases.Move{}
	for _, ch := range h.snapshot(t) {
		switch ch.kind {
		case moveStarted:
			out[ch.target] = ch.move
		case moveEnded:
			delete(out, ch.target)
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
