package leases

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMove(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	a := NewClaims(te.session(t, SessionConfig{}, nil), ks, "a", 0, nil)
	b := NewClaims(te.session(t, SessionConfig{}, nil), ks, "b", 0, nil)
	reb := te.session(t, SessionConfig{}, nil)
	won, err := a.Claim(ctx, targets(2))
	require.NoError(t, err)
	cl := won[0]

	// A deadline in another zone must still match after a round trip.
	deadline := time.Now().Add(time.Minute).In(time.FixedZone("east", 3*3600))
	m := Move{Target: cl.Target, From: "a", To: "b", Epoch: cl.Epoch, Deadline: deadline, Reason: "balance"}

	for _, tc := range []struct {
		name string
		m    Move
		want error
	}{
		{name: "stale epoch", m: with(m, func(m *Move) { m.Epoch-- }), want: ErrNotOwner},
		{name: "unclaimed target", m: with(m, func(m *Move) { m.Target = "unclaimed" }), want: ErrNotOwner},
		{name: "ok", m: m},
		{name: "again", m: m, want: ErrMoveInProgress},
	} {
		err := StartMove(ctx, reb, ks, tc.m)
		if tc.want == nil {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, tc.want, tc.name)
		}
	}
	require.Error(t, StartMove(ctx, reb, ks, with(m, func(m *Move) { m.To = "a" })), "from == to")

	moves, err := ListMoves(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Len(t, moves, 1)
	listed := moves[0]
	require.True(t, deadline.Equal(listed.Deadline))
	require.Equal(t, with(m, func(m *Move) { m.Deadline = listed.Deadline }), listed)

	for _, tc := range []struct {
		name string
		c    *Claims
		m    Move
	}{
		{name: "not the destination", c: a, m: listed},
		{name: "stale epoch", c: b, m: with(listed, func(m *Move) { m.Epoch-- })},
		{name: "different move", c: b, m: with(listed, func(m *Move) { m.Reason = "drain" })},
	} {
		_, err := tc.c.TakeOver(ctx, tc.m)
		require.ErrorIs(t, err, ErrNotOwner, tc.name)
	}

	// The move as the rebalancer built it (other zone) and as listed are the same move.
	got, err := b.TakeOver(ctx, m)
	require.NoError(t, err)
	require.Equal(t, "b", got.Owner)
	require.Equal(t, b.Session().Lease(), got.Lease)
	require.Greater(t, got.Epoch, cl.Epoch)
	owner, ok, err := b.Owner(ctx, cl.Target)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, got, owner)
	moves, err = ListMoves(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Empty(t, moves, "TakeOver deletes the move")

	_, err = b.TakeOver(ctx, listed)
	require.ErrorIs(t, err, ErrNotOwner, "second TakeOver")
	released, err := a.Release(ctx, []Claim{cl})
	require.NoError(t, err)
	require.Empty(t, released, "the old owner cannot release a moved claim")

	// Abort: the claim stays where it is and the move cannot be completed.
	back := Move{Target: cl.Target, From: "b", To: "a", Epoch: got.Epoch, Deadline: time.Now().Add(time.Minute)}
	require.NoError(t, StartMove(ctx, reb, ks, back))
	require.NoError(t, AbortMove(ctx, te.cli, ks, cl.Target))
	require.NoError(t, AbortMove(ctx, te.cli, ks, cl.Target), "aborting twice is fine")
	_, err = a.TakeOver(ctx, back)
	require.ErrorIs(t, err, ErrNotOwner)
	owner, _, err = a.Owner(ctx, cl.Target)
	require.NoError(t, err)
	require.Equal(t, got, owner)

	// A move lives on the rebalancer's lease.
	other := Move{Target: won[1].Target, From: "a", To: "b", Epoch: won[1].Epoch, Deadline: time.Now().Add(time.Minute)}
	require.NoError(t, StartMove(ctx, reb, ks, other))
	require.NoError(t, reb.Close())
	moves, err = ListMoves(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Empty(t, moves)
	require.ErrorIs(t, StartMove(ctx, reb, ks, other), ErrSessionClosed)
}

func with(m Move, f func(*Move)) Move {
	f(&m)
	return m
}
