package leases

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	s := te.session(t, SessionConfig{}, nil)
	ts := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	l := Load{
		Scraper: "a", Targets: 2, Series: 300, SamplesPerSecond: 20, ScrapeSecondsPerSecond: 0.01,
		PerTarget:  map[string]TargetLoad{"t1": {Series: 100, ScrapeSeconds: 0.1}},
		LastScrape: map[string]time.Time{"t1": ts, "t2": ts.Add(time.Second)},
	}
	require.Error(t, PutLoad(ctx, s, ks, Load{}), "no scraper")
	require.NoError(t, PutLoad(ctx, s, ks, l))
	got, err := ListLoads(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Len(t, got, 1)
	g := got["a"]
	require.False(t, g.Updated.IsZero(), "Updated is set")
	require.Equal(t, int64(300), g.Series)
	require.Equal(t, map[string]TargetLoad{
		"t1": {Series: 100, ScrapeSeconds: 0.1, LastScrape: ts},
		"t2": {LastScrape: ts.Add(time.Second)},
	}, g.PerTarget)
	require.Equal(t, l.LastScrape, g.LastScrape)

	require.NoError(t, s.Close())
	got, err = ListLoads(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Empty(t, got, "a load report goes with its session")
	require.ErrorIs(t, PutLoad(ctx, s, ks, l), ErrSessionClosed)
}
