package leases

import (
	"context"
	"flag"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestSessionConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		args       []string
		wantErr    bool
		wantTTL    time.Duration
		wantMargin time.Duration
	}{
		{name: "defaults", wantTTL: 5 * time.Second, wantMargin: time.Second},
		{name: "rounded up", args: []string{"-lease.ttl=2500ms"}, wantTTL: 3 * time.Second, wantMargin: 600 * time.Millisecond},
		{name: "explicit margin", args: []string{"-lease.ttl=10s", "-lease.margin=3s"}, wantTTL: 10 * time.Second, wantMargin: 3 * time.Second},
		{name: "too short", args: []string{"-lease.ttl=1s"}, wantErr: true},
		{name: "negative ttl", args: []string{"-lease.ttl=-5s"}, wantErr: true},
		{name: "negative margin", args: []string{"-lease.margin=-1s"}, wantErr: true},
		{name: "margin over half", args: []string{"-lease.ttl=4s", "-lease.margin=2100ms"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg SessionConfig
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			err := cfg.Validate()
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantTTL, cfg.ttl())
			require.Equal(t, tc.wantMargin, cfg.margin())
		})
	}
}

func TestSessionRenews(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	reg := prometheus.NewRegistry()
	s := te.session(t, SessionConfig{TTL: 2500 * time.Millisecond}, reg)
	require.Equal(t, 3*time.Second, s.TTL(), "TTL is rounded up to whole seconds")
	// A second session on the same registry shares the metrics.
	s2 := te.session(t, SessionConfig{}, reg)

	// Outlive the TTL several times over: renewals must keep the lease and
	// push the deadline forward.
	first := s.Deadline()
	require.Eventually(t, func() bool { return s.Deadline().After(first.Add(2 * s.TTL())) },
		20*time.Second, 50*time.Millisecond)
	require.NoError(t, s.Err())
	ttl, err := te.cli.TimeToLive(testCtx(t), s.Lease())
	require.NoError(t, err)
	require.Positive(t, ttl.TTL)
	require.WithinDuration(t, time.Now().Add(s.TTL()-s.margin), s.Deadline(), s.TTL())

	left := gaugeValue(t, reg, "allot_lease_deadline_seconds")
	require.Greater(t, left, 0.0)
	require.LessOrEqual(t, left, s.TTL().Seconds())
	require.NoError(t, s2.Close())
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Err(), ErrSessionClosed)
	n, err := testutil.GatherAndCount(reg, "allot_lease_deadline_seconds")
	require.NoError(t, err)
	require.Zero(t, n, "no live session, no deadline")
}

func TestSessionClose(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	s := te.session(t, SessionConfig{}, nil)
	c := NewClaims(s, ks, "a", 0, nil)
	won, err := c.Claim(testCtx(t), targets(50))
	require.NoError(t, err)
	require.Len(t, won, 50)

	closed := time.Now()
	require.NoError(t, s.Close())
	waitClosed(t, s.Done(), time.Second, "Done after Close")
	require.ErrorIs(t, s.Err(), ErrSessionClosed)
	require.Eventually(t, func() bool { return countClaims(t, te.cli, ks, s.Lease()) == 0 },
		time.Second, 10*time.Millisecond, "Close revokes the lease: claims go at once")
	t.Logf("claims gone %s after Close", time.Since(closed))
	require.NoError(t, s.Close(), "closing twice is harmless")

	_, err = c.Claim(testCtx(t), targets(1))
	require.ErrorIs(t, err, ErrSessionClosed)
}

func TestSessionOrphan(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	s := te.session(t, SessionConfig{}, nil)
	c := NewClaims(s, ks, "a", 0, nil)
	won, err := c.Claim(testCtx(t), targets(20))
	require.NoError(t, err)
	require.Len(t, won, 20)

	orphaned := time.Now()
	s.Orphan()
	require.ErrorIs(t, s.Err(), ErrSessionClosed)
	waitClosed(t, s.Done(), 0, "Done after Orphan")
	require.Equal(t, 20, countClaims(t, te.cli, ks, s.Lease()), "Orphan must not revoke")

	// The last renewal was sent before Orphan, so the server expires the
	// lease no later than TTL after it (and checks every 500ms).
	require.Eventually(t, func() bool { return countClaims(t, te.cli, ks, s.Lease()) == 0 },
		s.TTL()+time.Second, 20*time.Millisecond, "claims must expire within TTL+1s of Orphan")
	t.Logf("claims expired %s after Orphan", time.Since(orphaned))
}

// TestSessionPartition cuts a session off from etcd by making its renewals
// hang, as in a partition, and checks that it gives up at its local deadline,
// while the server still holds the lease, and not earlier.
func TestSessionPartition(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	reg := prometheus.NewRegistry()
	cfg := SessionConfig{TTL: testTTL, Margin: 700 * time.Millisecond}
	s := te.session(t, cfg, reg)
	c := NewClaims(s, ks, "a", 0, nil)

	var (
		mu     sync.Mutex
		lastOK time.Time // when the last successful renewal was sent
		cut    atomic.Bool
	)
	real := te.cli.KeepAliveOnce
	s.setRenew(func(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
		if cut.Load() {
			<-ctx.Done() // the request goes nowhere
			return nil, ctx.Err()
		}
		sent := time.Now()
		resp, err := real(ctx, id)
		if err == nil {
			mu.Lock()
			lastOK = sent
			mu.Unlock()
		}
		return resp, err
	})
	won, err := c.Claim(testCtx(t), targets(10))
	require.NoError(t, err)
	require.Len(t, won, 10)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !lastOK.IsZero()
	}, 10*time.Second, 10*time.Millisecond)
	cut.Store(true)

	doneAt := waitClosed(t, s.Done(), 10*time.Second, "Done in a partition")
	// Read the server's view first: the window is only the margin wide.
	stillHeld := countClaims(t, te.cli, ks, s.Lease())
	mu.Lock()
	expected := lastOK.Add(cfg.TTL - cfg.Margin)
	serverExpiry := lastOK.Add(cfg.TTL)
	mu.Unlock()
	t.Logf("Done %s after local deadline, %s before earliest server expiry",
		doneAt.Sub(expected), serverExpiry.Sub(doneAt))

	require.ErrorIs(t, s.Err(), ErrLeaseLost)
	require.LessOrEqual(t, doneAt.Sub(expected), 250*time.Millisecond, "Done too late")
	require.GreaterOrEqual(t, doneAt.Sub(expected), -100*time.Millisecond, "Done before the deadline: gave up too early")
	require.Equal(t, 10, stillHeld, "Done must close before the server can expire the lease")
	require.Equal(t, 1.0, testutil.ToFloat64(newSessionMetrics(reg).lost))
	require.Positive(t, testutil.ToFloat64(newSessionMetrics(reg).keepaliveFailures))

	_, err = c.Claim(testCtx(t), targets(1))
	require.ErrorIs(t, err, ErrLeaseLost)

	// The server expires the lease on its own clock.
	require.Eventually(t, func() bool { return countClaims(t, te.cli, ks, s.Lease()) == 0 },
		cfg.TTL+2*time.Second, 20*time.Millisecond)
}

// TestSessionLeaseGone checks that a session whose lease the server no
// longer knows is lost at its next renewal, not at its deadline.
func TestSessionLeaseGone(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	s := te.session(t, SessionConfig{TTL: 6 * time.Second}, nil)
	other := te.client(t)
	_, err := other.Revoke(testCtx(t), s.Lease())
	require.NoError(t, err)
	revoked := time.Now()
	deadline := s.Deadline()
	doneAt := waitClosed(t, s.Done(), 10*time.Second, "Done after revoke")
	require.ErrorIs(t, s.Err(), ErrLeaseLost)
	require.True(t, doneAt.Before(deadline), "lost at the next renewal (%s after revoke), not at the deadline", doneAt.Sub(revoked))
	require.NoError(t, s.Close(), "closing a lost session is fine")
	require.ErrorIs(t, s.Err(), ErrLeaseLost, "Close does not hide the loss")
}

func TestSessionContextEnds(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := NewSession(ctx, te.cli, SessionConfig{TTL: testTTL}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, s.Err())
	select {
	case <-s.Ctx().Done():
		t.Fatal("session context ended early")
	default:
	}
	cancel()
	waitClosed(t, s.Done(), 5*time.Second, "Done after context")
	require.ErrorIs(t, s.Err(), context.Canceled)
	require.ErrorIs(t, context.Cause(s.Ctx()), context.Canceled)
}

func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Len(t, mf.GetMetric(), 1)
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestSessionHungRenewal makes renewals hang as they do on an etcd member
// whose leader just died: the request waits for an election that, from the
// client's point of view, may never end on that member. The session must
// give up on the stuck attempt and renew with a fresh one in time.
func TestSessionHungRenewal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		hung int // consecutive attempts that hang
	}{
		{"one attempt hangs", 1},
		{"two attempts hang", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := startEtcd(t)
			// TTL 6 s gives an interval of 2 s and an attempt bound of 1 s:
			// two hung attempts end 4 s after the last renewal, before the
			// local deadline at TTL - margin = 4.8 s.
			s := te.session(t, SessionConfig{TTL: 6 * time.Second}, nil)
			var hang, calls, renewed atomic.Int32
			real := te.cli.KeepAliveOnce
			s.setRenew(func(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
				calls.Add(1)
				if hang.Load() > 0 {
					hang.Add(-1)
					<-ctx.Done()
					return nil, ctx.Err()
				}
				resp, err := real(ctx, id)
				if err == nil {
					renewed.Add(1)
				}
				return resp, err
			})
			require.Eventually(t, func() bool { return renewed.Load() > 0 }, 10*time.Second, 10*time.Millisecond)
			before := calls.Load()
			renewedBefore := renewed.Load()
			hang.Store(int32(tc.hung))
			require.Eventually(t, func() bool { return hang.Load() == 0 && renewed.Load() > renewedBefore },
				3*s.TTL(), 10*time.Millisecond)
			require.NoError(t, s.Err(), "the session must survive %d hung renewals", tc.hung)
			require.GreaterOrEqual(t, calls.Load()-before, int32(tc.hung+1))
			require.True(t, s.Deadline().After(time.Now()))
		})
	}
}
