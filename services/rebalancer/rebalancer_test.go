package rebalancer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

// testConfig is a rebalancer config scaled down for tests.
func (c *testCluster) testConfig(id string) Config {
	return Config{
		ID:       id,
		Keyspace: c.ks,
		Session:  leases.SessionConfig{TTL: testTTL},
		Interval: 200 * time.Millisecond,
		// Many moves at once: etcd commits concurrent writes with one
		// fsync, which is what bounds these tests on a busy disk.
		MovesPerSecond:     1000,
		MaxConcurrentMoves: 150,
		// MoveTimeout stays at its default (10s): slow -race runs on a
		// loaded machine must not time moves out.
	}
}

// runRebalancer starts a rebalancer on its own client; the returned stop
// cancels Run and waits for it.
func (c *testCluster) runRebalancer(cfg Config, reg prometheus.Registerer) (*Rebalancer, *clientv3.Client, func()) {
	c.t.Helper()
	cli := c.client()
	r, err := New(cfg, cli, reg, testLogger(c.t))
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(c.t, <-done)
	}
	c.t.Cleanup(stop)
	return r, cli, stop
}

// seriesRatio is busiest/mean by series over the given scrapers, from the
// claims in etcd.
func (c *testCluster) seriesRatio(claims map[string]leases.Claim, scrapers ...*simScraper) float64 {
	per := map[string]float64{}
	var total float64
	for _, cl := range claims {
		per[cl.Owner] += float64(c.series[cl.Target])
		total += float64(c.series[cl.Target])
	}
	var busiest float64
	for _, sc := range scrapers {
		busiest = max(busiest, per[sc.id])
	}
	return busiest / (total / float64(len(scrapers)))
}

// testLogger logs to the test when ALLOT_TEST_LOG is set (debug level).
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("ALLOT_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func countOwned(claims map[string]leases.Claim) map[string]int {
	out := map[string]int{}
	for _, cl := range claims {
		out[cl.Owner]++
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

func TestRebalancesImbalance(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 300, 1)
	a := c.startScraper("a", simConfig{Seed: 1})
	b := c.startScraper("b", simConfig{Seed: 2, MaxPrepare: 50 * time.Millisecond})
	d := c.startScraper("c", simConfig{Seed: 3, MaxPrepare: 50 * time.Millisecond})
	require.NoError(t, a.claim(ctx, c.targets))
	cli := c.client()
	require.Len(t, c.claims(ctx, cli), 300)

	reg := prometheus.NewRegistry()
	cfg := c.testConfig("r1")
	r, _, _ := c.runRebalancer(cfg, reg)

	waitFor(t, 30*time.Second, "balanced", func() error {
		claims := c.claims(ctx, cli)
		if ratio := c.seriesRatio(claims, a, b, d); ratio > 1+DefaultTolerance+DefaultHysteresis {
			return fmt.Errorf("ratio %.3f, owned %v", ratio, countOwned(claims))
		}
		if st := r.Status(); st.Pending+st.Queued > 0 {
			return fmt.Errorf("%d moves pending, %d queued", st.Pending, st.Queued)
		}
		return checkConsistent(claims, c.targets, a, b, d)
	})
	claims := c.claims(ctx, cli)
	ratio := c.seriesRatio(claims, a, b, d)
	outcomes := map[string]int{}
	for _, m := range r.Status().Moves {
		outcomes[m.Outcome]++
	}
	t.Logf("balanced: ratio %.4f by series, owned %v, last moves %v, status ratio %.4f, plans %v",
		ratio, countOwned(claims), outcomes, r.Status().BalanceRatio, testutil.ToFloat64(r.metrics.plans))

	// Settled: several more evaluations move nothing (no oscillation).
	movesBefore := len(r.Status().Moves)
	evals := testutil.ToFloat64(r.metrics.evaluations)
	waitFor(t, 10*time.Second, "more evaluations", func() error {
		if got := testutil.ToFloat64(r.metrics.evaluations); got < evals+5 {
			return fmt.Errorf("%v evaluations since", got-evals)
		}
		return nil
	})
	require.Equal(t, movesBefore, len(r.Status().Moves), "moves after the cluster was balanced")
	require.NoError(t, checkConsistent(c.claims(ctx, cli), c.targets, a, b, d))
	require.Equal(t, 1.0, testutil.ToFloat64(r.metrics.leader))
	require.InDelta(t, ratio, testutil.ToFloat64(r.metrics.balanceRatio), 0.05)
}

func TestDrain(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 60, 2)
	scrapers := []*simScraper{
		c.startScraper("a", simConfig{Seed: 1}),
		c.startScraper("b", simConfig{Seed: 2}),
		c.startScraper("c", simConfig{Seed: 3}),
	}
	// Spread the targets round-robin to start from a balanced-ish cluster.
	for i, sc := range scrapers {
		var mine []string
		for j := i; j < len(c.targets); j += len(scrapers) {
			mine = append(mine, c.targets[j])
		}
		require.NoError(t, sc.claim(ctx, mine))
	}
	cli := c.client()
	r, _, _ := c.runRebalancer(c.testConfig("r1"), nil)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	// Through the HTTP API.
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/drain?scraper=c", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	waitFor(t, 20*time.Second, "c drained", func() error {
		claims := c.claims(ctx, cli)
		owned := countOwned(claims)
		if owned["c"] != 0 {
			return fmt.Errorf("c still owns %d", owned["c"])
		}
		if r := c.seriesRatio(claims, scrapers[0], scrapers[1]); r > 1.1 {
			return fmt.Errorf("a and b unbalanced: ratio %.3f, owned %v", r, owned)
		}
		return checkConsistent(claims, c.targets, scrapers...)
	})
	t.Logf("drained: owned %v", countOwned(c.claims(ctx, cli)))
	st := r.Status()
	require.Equal(t, []string{"c"}, st.Draining)
	require.True(t, st.IsLeader)
	require.Len(t, st.Scrapers, 3)
	for _, sc := range st.Scrapers {
		require.Equal(t, sc.ID == "c", sc.Draining, "%+v", sc)
	}
	page, err := http.Get(srv.URL + "/cluster")
	require.NoError(t, err)
	body, err := io.ReadAll(page.Body)
	page.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), "(leader)")
	require.Contains(t, string(body), "<td>yes</td>", "c shown as draining")

	// Still drained a few evaluations later: nothing is moved back.
	evals := testutil.ToFloat64(r.metrics.evaluations)
	waitFor(t, 10*time.Second, "more evaluations", func() error {
		if got := testutil.ToFloat64(r.metrics.evaluations); got < evals+3 {
			return fmt.Errorf("%v evaluations since", got-evals)
		}
		return nil
	})
	require.Zero(t, countOwned(c.claims(ctx, cli))["c"])

	// Undrain: c gets its share back.
	require.NoError(t, r.Undrain(ctx, "c"))
	waitFor(t, 20*time.Second, "c refilled", func() error {
		claims := c.claims(ctx, cli)
		if ratio := c.seriesRatio(claims, scrapers...); ratio > 1.07 {
			return fmt.Errorf("ratio %.3f, owned %v", ratio, countOwned(claims))
		}
		return checkConsistent(claims, c.targets, scrapers...)
	})

	// Drain again, then c leaves: the mark goes with it.
	require.NoError(t, r.Drain(ctx, "c"))
	waitFor(t, 20*time.Second, "c drained again", func() error {
		if n := countOwned(c.claims(ctx, cli))["c"]; n != 0 {
			return fmt.Errorf("c owns %d", n)
		}
		return nil
	})
	scrapers[2].leave()
	waitFor(t, 10*time.Second, "drain mark removed", func() error {
		resp, err := cli.Get(ctx, DrainKey(c.ks, "c"))
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 0 {
			return fmt.Errorf("drain mark still there")
		}
		return nil
	})
	require.ErrorIs(t, r.Drain(ctx, "c"), ErrUnknownScraper)
}

func TestLeaderKilledMidPlan(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 90, 3)
	scrapers := []*simScraper{
		c.startScraper("a", simConfig{Seed: 1, AutoClaim: true, MaxPrepare: 300 * time.Millisecond}),
		c.startScraper("b", simConfig{Seed: 2, AutoClaim: true, MaxPrepare: 300 * time.Millisecond}),
		c.startScraper("c", simConfig{Seed: 3, AutoClaim: true, MaxPrepare: 300 * time.Millisecond}),
	}
	require.NoError(t, scrapers[0].claim(ctx, c.targets))
	cli := c.client()

	// A slow leader, so that it is killed with moves pending.
	cfg := c.testConfig("r1")
	cfg.MovesPerSecond = 20
	cfg.MaxConcurrentMoves = 5
	r1, cli1, stop1 := c.runRebalancer(cfg, nil)
	waitFor(t, 10*time.Second, "r1 leads", func() error {
		if !r1.IsLeader() {
			return fmt.Errorf("not leader")
		}
		return nil
	})
	cfg2 := c.testConfig("r2")
	r2, _, _ := c.runRebalancer(cfg2, nil)
	// The standby knows who leads and shows the scrapers from their reports.
	waitFor(t, 10*time.Second, "r2 standing by", func() error {
		st := r2.Status()
		if st.IsLeader || st.Leader != "r1" || len(st.Scrapers) != 3 {
			return fmt.Errorf("status: leader %q (self: %v), %d scrapers", st.Leader, st.IsLeader, len(st.Scrapers))
		}
		return nil
	})

	var inEtcd int64
	waitFor(t, 20*time.Second, "r1 mid-plan", func() error {
		st := r1.Status()
		resp, err := cli.Get(ctx, c.ks.Moves(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		inEtcd = resp.Count
		if len(st.Moves) < 5 || inEtcd == 0 {
			return fmt.Errorf("%d moves done, %d in etcd", len(st.Moves), inEtcd)
		}
		return nil
	})
	t.Logf("killing r1 after %d moves, with about %d in etcd", len(r1.Status().Moves), inEtcd)
	// Killed: its connection to etcd is gone without resigning or revoking.
	require.NoError(t, cli1.Close())

	waitFor(t, 20*time.Second, "r2 leads", func() error {
		if !r2.IsLeader() {
			return fmt.Errorf("not leader (leader: %q)", r2.Status().Leader)
		}
		return nil
	})
	stop1()
	waitFor(t, 30*time.Second, "balanced by r2", func() error {
		claims := c.claims(ctx, cli)
		if ratio := c.seriesRatio(claims, scrapers...); ratio > 1.07 {
			return fmt.Errorf("ratio %.3f, owned %v", ratio, countOwned(claims))
		}
		resp, err := cli.Get(ctx, c.ks.Moves(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count != 0 {
			return fmt.Errorf("%d moves left", resp.Count)
		}
		return checkConsistent(claims, c.targets, scrapers...)
	})
	t.Logf("r2 finished: owned %v, r2 recorded %d moves", countOwned(c.claims(ctx, cli)), len(r2.Status().Moves))
}

func TestMoveTimesOut(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 20, 4)
	a := c.startScraper("a", simConfig{Seed: 1})
	b := c.startScraper("b", simConfig{Seed: 2, NeverTakeOver: true})
	require.NoError(t, a.claim(ctx, c.targets))
	cli := c.client()
	before := c.claims(ctx, cli)

	cfg := c.testConfig("r1")
	cfg.MoveTimeout = time.Second
	r, _, stop := c.runRebalancer(cfg, nil)

	var ms []MoveRecord
	waitFor(t, 20*time.Second, "moves timed out", func() error {
		ms = r.Status().Moves
		if len(ms) == 0 {
			return fmt.Errorf("no move finished")
		}
		for _, m := range ms {
			if m.Outcome != OutcomeTimeout {
				return fmt.Errorf("move %+v", m)
			}
		}
		return nil
	})
	stop()
	for _, m := range ms {
		require.GreaterOrEqual(t, m.Duration, cfg.MoveTimeout, "aborted before the deadline: %+v", m)
		require.Equal(t, "a", m.From)
		require.Equal(t, "b", m.To)
	}
	// Every target is still a's, at its original epoch, and no move is left.
	after := c.claims(ctx, cli)
	require.Equal(t, before, after)
	require.NoError(t, checkConsistent(after, c.targets, a, b))
	resp, err := cli.Get(ctx, c.ks.Moves(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, resp.Count)
}

// A move written by an earlier leader that gave up leadership but kept its
// lease is adopted: the new leader waits for it and aborts it at its
// deadline.
func TestAdoptsMovesOfPreviousLeader(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 2, 5)
	for _, id := range c.targets {
		c.series[id] = 100 // balanced: the rebalancer plans nothing itself
	}
	a := c.startScraper("a", simConfig{Seed: 1})
	b := c.startScraper("b", simConfig{Seed: 2, NeverTakeOver: true})
	require.NoError(t, a.claim(ctx, c.targets[:1]))
	require.NoError(t, b.claim(ctx, c.targets[1:]))
	cli := c.client()
	claims := c.claims(ctx, cli)

	old, err := leases.NewSession(ctx, cli, leases.SessionConfig{TTL: testTTL}, nil, nil)
	require.NoError(t, err)
	defer old.Close()
	m := leases.Move{Target: c.targets[0], From: "a", To: "b", Epoch: claims[c.targets[0]].Epoch,
		Deadline: time.Now().Add(1500 * time.Millisecond), Reason: "test"}
	require.NoError(t, leases.StartMove(ctx, old, c.ks, m))

	r, _, _ := c.runRebalancer(c.testConfig("r1"), nil)
	waitFor(t, 15*time.Second, "adopted move aborted", func() error {
		for _, rec := range r.Status().Moves {
			if rec.Target == m.Target {
				if rec.Outcome != OutcomeTimeout {
					return fmt.Errorf("outcome %s", rec.Outcome)
				}
				return nil
			}
		}
		return fmt.Errorf("not finished")
	})
	require.False(t, time.Now().Before(m.Deadline), "aborted before its deadline")
	require.Equal(t, claims, c.claims(ctx, cli))
}

// A leader whose election key is deleted behind its back steps down (its
// lease, and every move on it, is revoked) and campaigns again.
func TestStepsDownWhenElectionKeyDeleted(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 0, 6)
	cli := c.client()
	r, _, _ := c.runRebalancer(c.testConfig("r1"), nil)
	electionKey := func() (*mvccpb.KeyValue, error) {
		resp, err := cli.Get(ctx, c.ks.Election(electionName)+"/", clientv3.WithPrefix())
		if err != nil {
			return nil, err
		}
		if len(resp.Kvs) != 1 || !r.IsLeader() {
			return nil, fmt.Errorf("%d election keys, leader: %v", len(resp.Kvs), r.IsLeader())
		}
		return resp.Kvs[0], nil
	}
	var first *mvccpb.KeyValue
	waitFor(t, 10*time.Second, "r1 leads", func() (err error) {
		first, err = electionKey()
		return err
	})
	_, err := cli.Delete(ctx, string(first.Key))
	require.NoError(t, err)
	waitFor(t, 10*time.Second, "r1 leads again on a new lease", func() error {
		kv, err := electionKey()
		if err != nil {
			return err
		}
		if kv.Lease == first.Lease {
			return fmt.Errorf("still on lease %x", kv.Lease)
		}
		return nil
	})
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(first.Lease))
	require.NoError(t, err)
	require.LessOrEqual(t, ttl.TTL, int64(0), "the old lease was revoked")
}
