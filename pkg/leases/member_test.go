package leases

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMembers(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := NewKeyspace("/m")
	ctx := testCtx(t)
	sa := te.session(t, SessionConfig{}, nil)
	sb := te.session(t, SessionConfig{}, nil)
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ma := Member{ID: "a", Addr: "10.0.0.1:9090", Zone: "z1", Weight: 1, Started: started, Version: "v1"}
	mb := Member{ID: "b", Addr: "10.0.0.2:9090", Weight: 2, Started: started, Version: "v1", Kind: KindCollector}

	wctx, cancel := context.WithCancel(ctx)
	sets := WatchMembers(wctx, te.cli, ks, nil)
	// next returns the next set, skipping none: coalescing may merge
	// changes, so callers wait for the set they expect.
	waitFor := func(want []Member, within time.Duration) {
		t.Helper()
		timeout := time.After(within)
		var last []Member
		for {
			select {
			case got, ok := <-sets:
				require.True(t, ok)
				if equalMembers(got, want) {
					return
				}
				last = got
			case <-timeout:
				t.Fatalf("member set %v not seen within %s; last %v", want, within, last)
			}
		}
	}
	waitFor([]Member{}, 5*time.Second)

	require.Error(t, Register(ctx, sa, ks, Member{}), "empty id")
	require.NoError(t, Register(ctx, sb, ks, mb))
	require.NoError(t, Register(ctx, sa, ks, ma))
	waitFor([]Member{ma, mb}, 5*time.Second)
	list, rev, err := ListMembers(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Positive(t, rev)
	require.True(t, equalMembers([]Member{ma, mb}, list), "sorted by ID: %v", list)

	ma.Weight = 3
	require.NoError(t, Register(ctx, sa, ks, ma))
	waitFor([]Member{ma, mb}, 5*time.Second)

	require.NoError(t, sb.Close())
	waitFor([]Member{ma}, 5*time.Second)
	sa.Orphan()
	waitFor([]Member{}, sa.TTL()+5*time.Second)

	cancel()
	for range sets { // drains, then ends when the goroutine closes it
	}
}

func equalMembers(a, b []Member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].equal(b[i]) {
			return false
		}
	}
	return true
}
