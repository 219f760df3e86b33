package leases

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	s := te.session(t, SessionConfig{}, nil)
	for _, tc := range []struct {
		name    string
		targets int
		chunks  int
	}{
		{"none", 0, 0},
		{"one chunk", 3, 1},
		{"several chunks", 4500, 3},
		{"shrinks", 10, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Load{Scraper: "a", Targets: tc.targets, Series: int64(tc.targets) * 10, SamplesPerSecond: 20, PerTarget: map[string]TargetLoad{}}
			for i := 0; i < tc.targets; i++ {
				l.PerTarget[fmt.Sprintf("t%05d", i)] = TargetLoad{Series: int64(i + 1)}
			}
			require.NoError(t, PutLoad(ctx, s, ks, l))
			got, err := ListLoads(ctx, te.cli, ks)
			require.NoError(t, err)
			g := got["a"]
			require.False(t, g.Updated.IsZero(), "Updated is set")
			require.Equal(t, l.Series, g.Series)
			require.Equal(t, tc.chunks, g.Chunks)
			require.Len(t, g.PerTarget, tc.targets, "chunks of a larger report are deleted when it shrinks")
			for id, tl := range l.PerTarget {
				require.Equal(t, tl.Series, g.PerTarget[id].Series, id)
			}
			sum, err := LoadSummaries(ctx, te.cli, ks)
			require.NoError(t, err)
			require.Equal(t, l.Series, sum["a"].Series)
			require.Nil(t, sum["a"].PerTarget)
		})
	}

	// An unchanged report rewrites only the totals key.
	rev := func() int64 {
		r, err := te.cli.Get(ctx, ks.Loads(), clientv3.WithPrefix())
		require.NoError(t, err)
		n := int64(0)
		for _, kv := range r.Kvs {
			n = max(n, kv.ModRevision)
		}
		return n
	}
	l := Load{Scraper: "a", PerTarget: map[string]TargetLoad{"x": {Series: 5}}}
	require.NoError(t, PutLoad(ctx, s, ks, l))
	before := rev()
	require.NoError(t, PutLoad(ctx, s, ks, l))
	r, err := te.cli.Get(ctx, ks.Load("a")+"/0")
	require.NoError(t, err)
	require.Less(t, r.Kvs[0].ModRevision, before+1, "unchanged chunk not rewritten")

	require.Error(t, PutLoad(ctx, s, ks, Load{}), "no scraper")
	require.NoError(t, s.Close())
	got, err := ListLoads(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Empty(t, got, "a load report goes with its session")
	require.ErrorIs(t, PutLoad(ctx, s, ks, l), ErrSessionClosed)
}
