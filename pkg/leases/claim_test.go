package leases

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestClaimRace has two scrapers claim the same targets at the same time,
// in different orders: every target must be won by exactly one of them, and
// etcd must agree with what each was told.
func TestClaimRace(t *testing.T) {
	t.Parallel()
	const n = 300
	for _, tc := range []struct {
		batch   int
		wantTxn int // transactions per scraper
	}{
		{batch: 1, wantTxn: n},
		{batch: 7, wantTxn: 43},
		{batch: 128, wantTxn: 3}, // capped at MaxBatch = 127
		{batch: 300, wantTxn: 3},
	} {
		t.Run("batch="+strconv.Itoa(tc.batch), func(t *testing.T) {
			t.Parallel()
			te := startEtcd(t)
			ks := NewKeyspace("/race/")
			all := targets(n)
			type result struct {
				won []Claim
				err error
				reg *prometheus.Registry
				s   *Session
			}
			res := make([]result, 2)
			var start, wg sync.WaitGroup
			start.Add(1)
			for i, owner := range []string{"a", "b"} {
				reg := prometheus.NewRegistry()
				s := te.session(t, SessionConfig{}, reg)
				c := NewClaims(s, ks, owner, tc.batch, reg)
				order := append([]string(nil), all...)
				rand.New(rand.NewPCG(uint64(i), 1)).Shuffle(len(order), func(x, y int) { order[x], order[y] = order[y], order[x] })
				res[i] = result{reg: reg, s: s}
				wg.Add(1)
				go func() {
					defer wg.Done()
					start.Wait()
					res[i].won, res[i].err = c.Claim(testCtx(t), order)
				}()
			}
			start.Done()
			wg.Wait()

			stored, _, err := ListClaims(testCtx(t), te.cli, ks)
			require.NoError(t, err)
			require.Len(t, stored, n)
			seen := map[string]string{}
			for i, owner := range []string{"a", "b"} {
				r := res[i]
				require.NoError(t, r.err)
				for _, c := range r.won {
					prev, dup := seen[c.Target]
					require.False(t, dup, "target %s won by %s and %s", c.Target, prev, owner)
					seen[c.Target] = owner
					require.Equal(t, Claim{Target: c.Target, Owner: owner, Epoch: c.Epoch, Lease: r.s.Lease()}, c)
					require.Equal(t, c, stored[c.Target], "etcd disagrees about %s", c.Target)
				}
				require.Equal(t, tc.wantTxn, histogramCount(t, r.reg, "allot_claim_txn_duration_seconds"))
				won := testutil.ToFloat64(newClaimMetrics(r.reg).won)
				taken := testutil.ToFloat64(newClaimMetrics(r.reg).taken)
				require.Equal(t, float64(len(r.won)), won)
				require.Equal(t, float64(n), won+taken)
			}
			require.Len(t, seen, n)
			t.Logf("a won %d, b won %d", len(res[0].won), len(res[1].won))
		})
	}
}

func TestClaimAlreadyOwned(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	a := NewClaims(te.session(t, SessionConfig{}, nil), ks, "a", 0, nil)
	b := NewClaims(te.session(t, SessionConfig{}, nil), ks, "b", 0, nil)
	ts := targets(10)

	won, err := a.Claim(testCtx(t), append(ts[:5:5], ts[0], ts[1])) // duplicates are claimed once
	require.NoError(t, err)
	require.Len(t, won, 5)
	won, err = b.Claim(testCtx(t), ts)
	require.NoError(t, err)
	require.Len(t, won, 5)
	for i, c := range won {
		require.Equal(t, ts[5+i], c.Target)
	}
	won, err = a.Claim(testCtx(t), ts)
	require.NoError(t, err)
	require.Empty(t, won, "claiming what one already owns wins nothing new")

	got, ok, err := b.Owner(testCtx(t), ts[7])
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "b", got.Owner)
	_, ok, err = b.Owner(testCtx(t), "nope")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestRelease(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	a := NewClaims(te.session(t, SessionConfig{}, nil), ks, "a", 3, nil)
	b := NewClaims(te.session(t, SessionConfig{}, nil), ks, "b", 3, nil)
	ctx := testCtx(t)
	won, err := a.Claim(ctx, targets(10))
	require.NoError(t, err)
	require.Len(t, won, 10)

	stale := func(cs []Claim) []Claim {
		out := append([]Claim(nil), cs...)
		for i := range out {
			out[i].Epoch--
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		claims []Claim
		want   []Claim
	}{
		{name: "stale epoch is not released", claims: stale(won[:4]), want: []Claim{}},
		{name: "unknown target", claims: []Claim{{Target: "nope", Epoch: won[0].Epoch}}, want: []Claim{}},
		{name: "current epoch is released", claims: won[:4], want: won[:4]},
		{name: "released twice", claims: won[:4], want: []Claim{}},
		{name: "mixed", claims: append(stale(won[4:6]), won[6:8]...), want: won[6:8]},
	} {
		got, err := a.Release(ctx, tc.claims)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, got, tc.name)
	}
	stored, _, err := ListClaims(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Len(t, stored, 4)

	// b takes a released target; a's old claim on it must not release b's.
	bWon, err := b.Claim(ctx, []string{won[0].Target})
	require.NoError(t, err)
	require.Len(t, bWon, 1)
	got, err := a.Release(ctx, won[:1])
	require.NoError(t, err)
	require.Empty(t, got)
	cl, ok, err := a.Owner(ctx, won[0].Target)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, bWon[0], cl)
}

// TestListClaimsPaged lists claims in pages of several sizes, and checks
// that a scan stays at the revision of its first page while claims are
// written between its pages.
func TestListClaimsPaged(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	c := NewClaims(te.session(t, SessionConfig{}, nil), ks, "a", 0, nil)
	ctx := testCtx(t)
	ts := targets(60)
	won, err := c.Claim(ctx, ts[:50])
	require.NoError(t, err)
	require.Len(t, won, 50)
	want := map[string]Claim{}
	for _, w := range won {
		want[w.Target] = w
	}

	for _, page := range []int64{1, 7, 50, pageSize} {
		got, rev, err := listClaims(ctx, te.cli, ks, page)
		require.NoError(t, err)
		require.Equal(t, want, got, "page %d", page)
		require.GreaterOrEqual(t, rev, won[len(won)-1].Epoch)

		var extra []Claim
		seen := 0
		_, err = scanPrefixPaged(ctx, te.cli, ks.Claims(), page, func() {}, func(kv *mvccpb.KeyValue) error {
			if seen++; seen == 1 { // while the first page is being read
				extra, err = c.Claim(ctx, ts[50:])
				require.NoError(t, err)
				require.Len(t, extra, 10)
			}
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, 50, seen, "page %d: the scan saw claims made after its revision", page)
		released, err := c.Release(ctx, extra)
		require.NoError(t, err)
		require.Len(t, released, 10)
	}
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return int(mf.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
