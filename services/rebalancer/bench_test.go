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

// BenchmarkEvaluate measures the leader's in-memory work per evaluation
// (no etcd): "steady" is what every interval costs (the summary from claim
// counts and reports, and the balance check);
// "plan" is the full view and placement.Plan after a scale-out (one member
// new and empty).
//
//	go test -run '^$' -bench Evaluate -benchtime 3x ./services/rebalancer/
func BenchmarkEvaluate(b *testing.B) {
	for _, size := range []struct{ targets, members int }{{100_000, 100}, {800_000, 100}, {800_000, 1000}} {
		for _, phase := range []string{"steady", "plan"} {
			b.Run(fmt.Sprintf("targets=%d/members=%d/%s", size.targets, size.members, phase), func(b *testing.B) {
				tm, loads := benchTerm(size.targets, size.members, phase == "plan")
				cpu0 := cpuTime()
				b.ResetTimer()
				for b.Loop() {
					if phase == "steady" {
						members, owned := tm.summary(loads)
						st, _ := tm.measure(members, owned)
						_ = tm.outOfBalance(members, owned)
						b.ReportMetric(st.Ratio, "ratio")
						continue
					}
					c, owned := tm.cluster(loads)
					if !tm.outOfBalance(c.Members, owned) {
						b.Fatal("not out of balance")
					}
					moves := placement.Plan(c, nil, placement.PlanConfig{Tolerance: tm.cfg.Tolerance, Hysteresis: tm.cfg.Hysteresis, MaxMoves: tm.planSize()})
					b.ReportMetric(float64(len(moves)), "moves")
				}
				// CPU time, unlike wall time, does not depend on what else the
				// machine runs (it includes the GC's work on the whole heap).
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

// benchTerm is a leader's state over targets claimed round-robin by
// members (all but the last, if scaleOut), with skewed series.
func benchTerm(targets, members int, scaleOut bool) (*term, map[string]leases.Load) {
	rng := rand.New(rand.NewPCG(1, 2))
	tm := &term{
		cfg:        Config{Tolerance: DefaultTolerance, Hysteresis: DefaultHysteresis, MaxConcurrentMoves: DefaultMaxConcurrentMoves, MovesPerSecond: DefaultMovesPerSecond, Interval: DefaultInterval},
		members:    map[string]leases.Member{},
		claims:     make(map[string]leases.Claim, targets),
		ownedCount: map[string]int{},
		drains:     map[string]bool{},
		pending:    map[string]*pendingMove{},
	}
	loads := map[string]leases.Load{}
	for i := range members {
		id := fmt.Sprintf("scraper-%d", i)
		tm.members[id] = leases.Member{ID: id, Weight: 1}
		loads[id] = leases.Load{Scraper: id, PerTarget: map[string]leases.TargetLoad{}}
	}
	owners := members
	if scaleOut {
		owners--
	}
	for i := range targets {
		id := fmt.Sprintf("%016x", rng.Uint64())
		owner := fmt.Sprintf("scraper-%d", i%owners)
		series := int64(1 + rng.ExpFloat64()*200)
		tm.claims[id] = leases.Claim{Target: id, Owner: owner, Epoch: int64(i + 1)}
		tm.ownedCount[owner]++
		l := loads[owner]
		l.PerTarget[id] = leases.TargetLoad{Series: series}
		l.Series += series
		l.Targets++
		loads[owner] = l
	}
	return tm, loads
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
