package scraper

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// session is a stand-in for a leases.Session's liveness in gate unit tests.
type session struct {
	done     chan struct{}
	deadline time.Time
}

func (s *session) Done() <-chan struct{} { return s.done }
func (s *session) Deadline() time.Time   { return s.deadline }

func targetCtx(id string) context.Context {
	t := scrape.NewTarget(labels.FromStrings("__address__", "h:1", targetIDLabel, id), &config.ScrapeConfig{}, nil, nil)
	return scrape.ContextWithTarget(context.Background(), t)
}

// commit appends n samples (stale markers if stale) for target id through
// g and commits.
func commit(t *testing.T, g *gate, ctx context.Context, n int, stale bool) {
	t.Helper()
	app := g.AppenderV2(ctx)
	v := 1.0
	if stale {
		v = math.Float64frombits(value.StaleNaN)
	}
	for i := range n {
		_, err := app.Append(0, labels.FromStrings("__name__", "m", "i", string(rune('a'+i))), 0, 1000, v, nil, nil, storage.AOptions{})
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
}

func TestGate(t *testing.T) {
	t.Parallel()
	now := time.Now()
	alive := func() *session { return &session{done: make(chan struct{}), deadline: now.Add(time.Hour)} }
	closed := func() *session {
		s := alive()
		close(s.done)
		return s
	}
	past := func() *session { return &session{done: make(chan struct{}), deadline: now.Add(-time.Millisecond)} }

	for _, tc := range []struct {
		name      string
		live      *session
		setup     func(g *gate)
		ctx       context.Context
		stale     bool
		forwarded bool
		reason    string
	}{
		{name: "owned", live: alive(), setup: func(g *gate) { g.set("t1", gateOwned) }, ctx: targetCtx("t1"), forwarded: true},
		{name: "not owned", live: alive(), setup: func(g *gate) { g.set("t2", gateOwned) }, ctx: targetCtx("t1"), reason: dropUnowned},
		{name: "removed", live: alive(), setup: func(g *gate) { g.set("t1", gateOwned); g.remove("t1") }, ctx: targetCtx("t1"), reason: dropUnowned},
		{name: "no session", live: nil, setup: func(g *gate) { g.set("t1", gateOwned) }, ctx: targetCtx("t1"), reason: dropSession},
		{name: "session done", live: closed(), setup: func(g *gate) { g.set("t1", gateOwned) }, ctx: targetCtx("t1"), reason: dropSession},
		{name: "deadline passed before done closes", live: past(), setup: func(g *gate) { g.set("t1", gateOwned) }, ctx: targetCtx("t1"), reason: dropSession},
		{name: "preparing", live: alive(), setup: func(g *gate) { g.set("t1", gatePreparing) }, ctx: targetCtx("t1"), reason: dropPreparing},
		{name: "no target in context", live: alive(), setup: func(g *gate) { g.set("t1", gateOwned) }, ctx: context.Background(), reason: dropNoTarget},
		{name: "retired: stale markers pass", live: alive(), setup: func(g *gate) { g.retire("t1", now.Add(time.Hour)) }, ctx: targetCtx("t1"), stale: true, forwarded: true},
		{name: "retired: samples do not", live: alive(), setup: func(g *gate) { g.retire("t1", now.Add(time.Hour)) }, ctx: targetCtx("t1"), reason: dropUnowned},
		{name: "retired: too late", live: alive(), setup: func(g *gate) { g.retire("t1", now.Add(-time.Second)) }, ctx: targetCtx("t1"), stale: true, reason: dropUnowned},
		{name: "removed all", live: alive(), setup: func(g *gate) { g.set("t1", gateOwned); g.removeAll() }, ctx: targetCtx("t1"), reason: dropUnowned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			m, err := newMetrics(prometheus.NewRegistry())
			require.NoError(t, err)
			g := newGate(rec.For("s"), m.gateDropped)
			if tc.live != nil {
				g.setLive(tc.live)
			}
			tc.setup(g)
			commit(t, g, tc.ctx, 3, tc.stale)
			if tc.forwarded {
				require.Len(t, rec.snapshot(), 1)
				for _, r := range []string{dropUnowned, dropSession, dropPreparing, dropNoTarget} {
					require.Zero(t, testutil.ToFloat64(m.gateDropped.WithLabelValues(r)), r)
				}
				return
			}
			require.Empty(t, rec.snapshot())
			require.Equal(t, 3.0, testutil.ToFloat64(m.gateDropped.WithLabelValues(tc.reason)))
		})
	}
}

func TestGateOwnershipIsDecidedAtCommit(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	g := newGate(rec.For("s"), nil)
	g.setLive(&session{done: make(chan struct{}), deadline: time.Now().Add(time.Hour)})
	g.set("t1", gateOwned)

	// A scrape that started while the target was owned, but commits after
	// the target moved away, is dropped.
	app := g.AppenderV2(targetCtx("t1"))
	_, err := app.Append(0, labels.FromStrings("__name__", "up"), 0, 1000, 1, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	g.remove("t1")
	require.NoError(t, app.Commit())
	require.Empty(t, rec.snapshot())

	// And the other way round: a move that takes over mid-scrape forwards.
	g.set("t1", gatePreparing)
	app = g.AppenderV2(targetCtx("t1"))
	_, err = app.Append(0, labels.FromStrings("__name__", "up"), 0, 2000, 1, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	g.set("t1", gateOwned)
	require.NoError(t, app.Commit())
	require.Len(t, rec.snapshot(), 1)

	series, last, ok := g.stats("t1")
	require.True(t, ok)
	require.Equal(t, int64(1), series)
	require.False(t, last.IsZero())
}

func TestGateExpire(t *testing.T) {
	t.Parallel()
	g := newGate((&recorder{}).For("s"), nil)
	now := time.Now()
	g.retire("old", now.Add(-time.Second))
	g.retire("young", now.Add(time.Minute))
	g.set("owned", gateOwned)
	g.expire(now)
	_, _, ok := g.stats("old")
	require.False(t, ok)
	for _, id := range []string{"young", "owned"} {
		_, _, ok := g.stats(id)
		require.True(t, ok, id)
	}
}
