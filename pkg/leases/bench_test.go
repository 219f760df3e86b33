package leases

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkClaim measures claiming N unowned targets in batches, against an
// embedded etcd in the same process (fsync on, data in a temp dir). Run:
//
//	go test -run='^$' -bench=BenchmarkClaim -benchtime=1x ./pkg/leases/
//
// Every sub-benchmark has its own etcd. Each iteration claims every target
// on a fresh session, then (untimed) revokes it, which deletes the claims,
// and compacts, as a production etcd's auto-compaction would. inflight is how
// many batch transactions are in flight at once (the default is parallelTxns).
func BenchmarkClaim(b *testing.B) {
	ks := Keyspace{}
	for _, bc := range []struct{ targets, batch, inflight int }{
		{10_000, 1, 1}, // one txn per target, one at a time: kept small so it finishes
		{10_000, 1, parallelTxns},
		{100_000, 16, parallelTxns},
		{100_000, 64, parallelTxns},
		{100_000, 128, 1}, // batch capped at MaxBatch = 127
		{100_000, 128, 2},
		{100_000, 128, 4},
		{100_000, 128, 8},
	} {
		name := fmt.Sprintf("targets=%d/batch=%d/inflight=%d", bc.targets, bc.batch, bc.inflight)
		b.Run(name, func(b *testing.B) {
			te := startEtcd(b)
			ts := targets(bc.targets)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				s, err := NewSession(ctx, te.cli, SessionConfig{}, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				c := NewClaims(s, ks, "bench", bc.batch, nil)
				c.inflight = bc.inflight
				b.StartTimer()
				won, err := c.Claim(ctx, ts)
				b.StopTimer()
				if err != nil || len(won) != len(ts) {
					b.Fatalf("won %d of %d: %v", len(won), len(ts), err)
				}
				// Revoking a lease with 100k keys takes etcd longer than
				// Close waits (one TTL), so revoke here without a limit.
				s.Orphan()
				rctx, cancel := context.WithTimeout(ctx, time.Minute)
				_, err = te.cli.Revoke(rctx, s.Lease())
				cancel()
				if err != nil && !isLeaseNotFound(err) { // expired meanwhile: fine
					b.Fatal(err)
				}
				resp, err := te.cli.Get(ctx, "compact")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := te.cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(bc.targets*b.N)/b.Elapsed().Seconds(), "claims/s")
		})
	}
}
