package rebalancer

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// BenchmarkEvaluate measures the leader's in-memory work per evaluation:
// building the cluster from the mirrored claims and load reports,
// measuring it, and planning (the cluster starts with one member empty, as
// after a scale-out). No etcd: this is what the loop spends per interval.
//
//	go test -run '^$' -bench Evaluate -benchtime 3x ./services/rebalancer/
func BenchmarkEvaluate(b *testing.B) {
	for _, size := range []struct{ targets, members int }{{100_000, 100}, {800_000, 100}, {800_000, 1000}} {
		b.Run(fmt.Sprintf("targets=%d/members=%d", size.targets, size.members), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			tm := &term{
				cfg:     Config{Tolerance: DefaultTolerance, Hysteresis: DefaultHysteresis, MaxConcurrentMoves: DefaultMaxConcurrentMoves, MovesPerSecond: DefaultMovesPerSecond, Interval: DefaultInterval},
				members: map[string]leases.Member{},
				claims:  make(map[string]leases.Claim, size.targets),
				drains:  map[string]bool{},
				pending: map[string]*pendingMove{},
			}
			loads := map[string]leases.Load{}
			for i := range size.members {
				id := fmt.Sprintf("scraper-%d", i)
				tm.members[id] = leases.Member{ID: id, Weight: 1}
				loads[id] = leases.Load{Scraper: id, PerTarget: map[string]leases.TargetLoad{}}
			}
			for i := range size.targets {
				id := fmt.Sprintf("%016x", rng.Uint64())
				owner := fmt.Sprintf("scraper-%d", i%(size.members-1)) // the last member is new and empty
				series := int64(1 + rng.ExpFloat64()*200)
				tm.claims[id] = leases.Claim{Target: id, Owner: owner, Epoch: int64(i + 1)}
				loads[owner].PerTarget[id] = leases.TargetLoad{Series: series}
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				c, owned := tm.cluster(loads)
				st := placement.Measure(c)
				if !tm.outOfBalance(c.Members, owned) {
					b.Fatal("not out of balance")
				}
				moves := placement.Plan(c, nil, placement.PlanConfig{Tolerance: tm.cfg.Tolerance, Hysteresis: tm.cfg.Hysteresis, MaxMoves: tm.planSize()})
				b.ReportMetric(float64(len(moves)), "moves")
				b.ReportMetric(st.Ratio, "ratio")
			}
			// CPU time, unlike wall time, does not depend on what else the
			// machine runs.
			b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
