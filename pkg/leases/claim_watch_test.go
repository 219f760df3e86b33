package leases

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWatch(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	a := NewClaims(te.session(t, SessionConfig{}, nil), ks, "a", 0, nil)
	bs := te.session(t, SessionConfig{}, nil)
	b := NewClaims(bs, ks, "b", 0, nil)
	reb := te.session(t, SessionConfig{}, nil)

	wctx, cancel := context.WithCancel(ctx)
	events := a.Watch(wctx)
	next := func(within time.Duration) Event {
		t.Helper()
		select {
		case e, ok := <-events:
			require.True(t, ok, "watch closed")
			return e
		case <-time.After(within):
			t.Fatalf("no event within %s", within)
			return Event{}
		}
	}

	ts := targets(4)
	bWon, err := b.Claim(ctx, ts[:3])
	require.NoError(t, err)
	aWon, err := a.Claim(ctx, ts[3:])
	require.NoError(t, err)

	// Claiming produced nothing; releasing does.
	_, err = b.Release(ctx, bWon[:1])
	require.NoError(t, err)
	e := next(5 * time.Second)
	require.Equal(t, Event{Type: ClaimDeleted, Target: ts[0], PrevOwner: "b", Revision: e.Revision}, e)
	require.Greater(t, e.Revision, bWon[0].Epoch)

	// A move, taken over.
	m := Move{Target: ts[3], From: "a", To: "b", Epoch: aWon[0].Epoch, Deadline: time.Now().Add(time.Minute).UTC()}
	require.NoError(t, StartMove(ctx, reb, ks, m))
	e = next(5 * time.Second)
	require.Equal(t, MoveStarted, e.Type)
	require.Equal(t, ts[3], e.Target)
	require.Equal(t, m, e.Move)
	_, err = b.TakeOver(ctx, e.Move)
	require.NoError(t, err)
	e = next(5 * time.Second)
	require.Equal(t, MoveEnded, e.Type, "the take-over's put is filtered; the move's delete is not")
	require.Equal(t, m, e.Move)

	// B crashes: its lease expires and both remaining claims and the moved
	// target go, each reported with its previous owner.
	bs.Orphan()
	got := map[string]string{}
	for range 3 {
		e := next(bs.TTL() + 5*time.Second)
		require.Equal(t, ClaimDeleted, e.Type)
		got[e.Target] = e.PrevOwner
	}
	require.Equal(t, map[string]string{ts[1]: "b", ts[2]: "b", ts[3]: "b"}, got)

	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, ok := <-events:
			return !ok
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond, "channel closes when ctx ends")
}

func TestEventTypeString(t *testing.T) {
	t.Parallel()
	for typ, want := range map[EventType]string{ClaimDeleted: "ClaimDeleted", MoveStarted: "MoveStarted", MoveEnded: "MoveEnded", Resync: "Resync", 0: "EventType(0)"} {
		require.Equal(t, want, typ.String())
	}
}

// TestWatchCompacted starts a watch at a revision etcd has compacted away:
// it must say so with a Resync event and carry on from the compaction.
func TestWatchCompacted(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	a := NewClaims(te.session(t, SessionConfig{}, nil), ks, "a", 0, nil)
	won, err := a.Claim(ctx, targets(3))
	require.NoError(t, err)
	_, err = a.Release(ctx, won[:1]) // lost in the compaction
	require.NoError(t, err)
	resp, err := te.cli.Put(ctx, "x", "") // compacting keeps the revision compacted at
	require.NoError(t, err)
	_, err = te.cli.Compact(ctx, resp.Header.Revision)
	require.NoError(t, err)

	out := make(chan Event)
	w := &claimWatch{c: a, out: out, claimRev: won[0].Epoch, moveRev: resp.Header.Revision + 1}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(wctx)
	}()
	defer func() { cancel(); <-done }()

	select {
	case e := <-out:
		require.Equal(t, Event{Type: Resync, Revision: resp.Header.Revision}, e)
	case <-time.After(10 * time.Second):
		t.Fatal("no Resync")
	}
	_, err = a.Release(ctx, won[1:2])
	require.NoError(t, err)
	select {
	case e := <-out:
		require.Equal(t, ClaimDeleted, e.Type)
		require.Equal(t, won[1].Target, e.Target)
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not resume after compaction")
	}
}

// TestWatchReportsExistingMoves starts a watch after moves were written, as
// a scraper does when the rebalancer plans a move to it between its
// registration and its watch: the moves that exist must still be reported,
// once each, and later ones as usual.
func TestWatchReportsExistingMoves(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	a := NewClaims(te.session(t, SessionConfig{}, nil), ks, "a", 0, nil)
	b := NewClaims(te.session(t, SessionConfig{}, nil), ks, "b", 0, nil)
	reb := te.session(t, SessionConfig{}, nil)

	ts := targets(3)
	aWon, err := a.Claim(ctx, ts)
	require.NoError(t, err)
	move := func(i int) Move {
		return Move{Target: ts[i], From: "a", To: "b", Epoch: aWon[i].Epoch, Deadline: time.Now().Add(time.Minute).UTC()}
	}
	before := []Move{move(0), move(1)}
	for _, m := range before {
		require.NoError(t, StartMove(ctx, reb, ks, m))
	}

	events := b.Watch(ctx)
	next := func() Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
			return Event{}
		}
	}
	got := map[string]Move{}
	for range before {
		e := next()
		require.Equal(t, MoveStarted, e.Type)
		got[e.Target] = e.Move
	}
	require.Equal(t, map[string]Move{ts[0]: before[0], ts[1]: before[1]}, got)

	later := move(2)
	require.NoError(t, StartMove(ctx, reb, ks, later))
	e := next()
	require.Equal(t, MoveStarted, e.Type)
	require.Equal(t, later, e.Move, "existing moves are reported once, then the watch goes on")
}
