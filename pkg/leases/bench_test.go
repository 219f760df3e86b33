package leases

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
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

// BenchmarkLoadEvaluation measures what reading the load reports costs the
// rebalancer leader per evaluation: "list" reads them all with ListLoads
// (what the leader did before), "watch" takes a copy from a LoadWatch that
// follows load/ (what it does now), after waiting for the watch to deliver
// the latest report. Between evaluations (untimed) every scraper reports
// again, as it does each interval: its totals key always, and 1% of all
// chunks (at least one) change content. etcd-B/eval is what the reading
// client received from etcd per evaluation (gRPC payloads, listing or
// watch events). figures=series reports series only per target (as
// scrapers before the per-target rates did), figures=all the rates and a
// zone as well. Run:
//
//	go test -run='^$' -bench=BenchmarkLoadEvaluation -benchtime=50x ./pkg/leases/
//
// ALLOT_BENCH_800K=1 adds 800k targets (slow to set up).
func BenchmarkLoadEvaluation(b *testing.B) {
	sizes := []struct{ targets, scrapers int }{{100_000, 20}}
	if os.Getenv("ALLOT_BENCH_800K") != "" {
		sizes = append(sizes, struct{ targets, scrapers int }{800_000, 20})
	}
	for _, size := range sizes {
		for _, figures := range []string{"series", "all"} {
			for _, mode := range []string{"list", "watch"} {
				b.Run(fmt.Sprintf("targets=%d/scrapers=%d/figures=%s/%s", size.targets, size.scrapers, figures, mode), func(b *testing.B) {
					benchLoadEvaluation(b, size.targets, size.scrapers, mode == "watch", figures == "all")
				})
			}
		}
	}
}

func benchLoadEvaluation(b *testing.B, nTargets, scrapers int, watch, all bool) {
	te := startEtcd(b)
	ks := Keyspace{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	loads := make([]Load, scrapers)
	sessions := make([]*Session, scrapers)
	for i, t := range targets(nTargets) {
		l := &loads[i%scrapers]
		if l.PerTarget == nil {
			l.Scraper = fmt.Sprintf("scraper-%02d", i%scrapers)
			l.PerTarget = map[string]TargetLoad{}
		}
		tl := TargetLoad{Series: int64(100 + i%1000)}
		if all {
			tl.SamplesPerSecond = float64(tl.Series) / 15
			tl.ScrapeSecondsPerSecond = (0.002 + float64(tl.Series)*1e-5) / 15
			tl.Zone = []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}[i%3]
		}
		l.PerTarget[t] = tl
		l.Targets++
	}
	report := func() {
		for i := range loads {
			if err := PutLoad(ctx, sessions[i], ks, loads[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := range sessions {
		sessions[i] = te.session(b, SessionConfig{TTL: 10 * time.Second}, nil)
	}
	report()
	chunks := 0
	for _, l := range loads {
		chunks += (len(l.PerTarget) + loadChunkTargets - 1) / loadChunkTargets
	}
	changed := max(1, chunks/100)
	// The targets whose series change, in turn: one per scraper at a time,
	// so that each change is in another chunk.
	ids := make([][]string, scrapers)
	for i, l := range loads {
		ids[i] = slices.Sorted(maps.Keys(l.PerTarget))
	}

	var rx rxCounter
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{te.e.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithStatsHandler(&rx)},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	var w *LoadWatch
	if watch {
		wctx, stop := context.WithCancel(ctx)
		w = WatchLoads(wctx, cli, ks, nil, nil)
		defer func() {
			stop()
			<-w.Done()
		}()
		if _, err := w.Loads(ctx); err != nil {
			b.Fatal(err)
		}
	}

	rx0 := rx.n.Load()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for j := range changed {
			s := (i*changed + j) % scrapers
			t := ids[s][(i*changed+j)/scrapers*7919%len(ids[s])]
			tl := loads[s].PerTarget[t]
			tl.Series++
			loads[s].PerTarget[t] = tl
		}
		report()
		resp, err := te.cli.Get(ctx, "rev")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var got map[string]Load
		if watch {
			waitLoadRev(b, w, resp.Header.Revision)
			got, err = w.Loads(ctx)
		} else {
			got, err = ListLoads(ctx, cli, ks)
		}
		if err != nil || len(got) != scrapers {
			b.Fatalf("%d reports: %v", len(got), err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(rx.n.Load()-rx0)/float64(b.N), "etcd-B/eval")
	b.ReportMetric(float64(changed), "chunks-changed/eval")
}

// waitLoadRev waits until w has applied every change up to revision rev,
// which must be a put under load/ (the last report's totals).
func waitLoadRev(tb testing.TB, w *LoadWatch, rev int64) {
	tb.Helper()
	for {
		changed := w.updated()
		w.mu.Lock()
		var seen int64
		for _, k := range w.keys {
			seen = max(seen, k.rev)
		}
		w.mu.Unlock()
		if seen >= rev {
			return
		}
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			tb.Fatalf("load watch at revision %d, want %d", seen, rev)
		}
	}
}

// rxCounter counts the gRPC payload bytes a client receives.
type rxCounter struct{ n atomic.Int64 }

func (c *rxCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (c *rxCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if p, ok := s.(*stats.InPayload); ok {
		c.n.Add(int64(p.WireLength))
	}
}

func (c *rxCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (c *rxCounter) HandleConn(context.Context, stats.ConnStats) {}
