package main

import (
	"fmt"
	"sync"
	"testing"
)

var (
	workloadsMu sync.Mutex
	workloads   = map[int]*workload{}
)

// sharedWorkload builds each size once per test binary, and only when a
// benchmark that needs it runs.
func sharedWorkload(targets int) *workload {
	workloadsMu.Lock()
	defer workloadsMu.Unlock()
	w, ok := workloads[targets]
	if !ok {
		w = newWorkload(defaultWorkload(targets))
		workloads[targets] = w
	}
	return w
}

// BenchmarkPlacement runs the placement simulation for every size and
// strategy and reports its figures as metrics, per phase (init, out for
// N → N+1, in for N → N−1):
//
//	go test -run=^$ -bench=BenchmarkPlacement -benchtime=1x ./pkg/placement/...
//
// moved is the fraction of targets that changed scraper, moved/ideal that
// over 1/(N+1) (out) or 1/N (in), busiest/mean the busiest scraper's load
// over the mean by series, by-count the same by targets, empty the scrapers
// without targets, cpu-ms the CPU time of the step.
func BenchmarkPlacement(b *testing.B) {
	for _, t := range []int{100_000, 800_000} {
		for _, n := range []int{10, 100, 1000} {
			for _, s := range strategyNames {
				b.Run(fmt.Sprintf("targets=%d/scrapers=%d/%s", t, n, s), func(b *testing.B) {
					w := sharedWorkload(t)
					var cr caseResult
					for b.Loop() {
						var err error
						if cr, err = runCase(w, s, n); err != nil {
							b.Fatal(err)
						}
					}
					for _, ph := range []struct {
						p      phase
						prefix string
						ideal  int
					}{{phaseInitial, "init", 0}, {phaseScaleOut, "out", n + 1}, {phaseScaleIn, "in", n}} {
						r, ok := cr.Phases[ph.p]
						if !ok {
							continue
						}
						if ph.ideal > 0 {
							b.ReportMetric(r.Moved, ph.prefix+"-moved")
							b.ReportMetric(r.Moved*float64(ph.ideal), ph.prefix+"-moved/ideal")
						} else if s == "allot" {
							b.ReportMetric(r.Moved, ph.prefix+"-moved")
						}
						b.ReportMetric(r.Ratio, ph.prefix+"-busiest/mean")
						b.ReportMetric(r.CountRatio, ph.prefix+"-by-count")
						b.ReportMetric(float64(r.Empty), ph.prefix+"-empty")
						b.ReportMetric(float64(r.CPU.Microseconds())/1000, ph.prefix+"-cpu-ms")
					}
				})
			}
		}
	}
}

func TestStrategies(t *testing.T) {
	const targets, n = 20000, 10
	w := newWorkload(defaultWorkload(targets))
	got := map[string]caseResult{}
	for _, s := range strategyNames {
		cr, err := runCase(w, s, n)
		if err != nil {
			t.Fatal(err)
		}
		for ph, r := range cr.Phases {
			if r.Unowned != 0 {
				t.Errorf("%s %s: %d targets unowned", s, ph, r.Unowned)
			}
		}
		got[s] = cr
	}

	allot := got["allot"]
	if out := allot.Phases[phaseScaleOut]; out.Moved > 1.1/(n+1) || out.Ratio > 1.05 || out.Empty != 0 {
		t.Errorf("allot scale-out misses the aims: %v", out)
	}
	for ph, r := range allot.Phases {
		if r.Ratio > 1.05 {
			t.Errorf("allot %s: busiest/mean %.3f", ph, r.Ratio)
		}
	}
	// The least-weighted strategy gives a new collector nothing.
	if out := got["ta-least-weighted"].Phases[phaseScaleOut]; out.Moved != 0 || out.Empty != 1 {
		t.Errorf("least-weighted scale-out: %v, want nothing moved and the new collector empty", out)
	}
	// Consistent hashing moves some targets, hash % N nearly all.
	if out := got["ta-consistent-hashing"].Phases[phaseScaleOut]; out.Moved == 0 || out.Moved > 0.5 {
		t.Errorf("consistent hashing scale-out: %v", out)
	}
	if out := got["hash-mod-n"].Phases[phaseScaleOut]; out.Moved < 0.8 {
		t.Errorf("hash %% N scale-out: %v", out)
	}
	// Scale-in: every target of the departed scraper moves, for everyone.
	for s, cr := range got {
		if in := cr.Phases[phaseScaleIn]; in.Moved < 0.05 {
			t.Errorf("%s scale-in moved only %.4f", s, in.Moved)
		}
	}
}

// TestLeastWeightedMatchesAllocator checks the simulation's shortcut (only
// collectors with the fewest targets are scanned) against the allocator's
// plain comparison over every collector.
func TestLeastWeightedMatchesAllocator(t *testing.T) {
	cfg := defaultWorkload(3000)
	cfg.Jobs = 7
	w := newWorkload(cfg)
	names := []string{"c", "a", "e", "b", "d", "f"}
	s := &leastWeighted{w: w}
	first := s.Place(names)
	in := s.Rescale(first, []string{"c", "a", "b", "d", "f"})

	naive := func(prev assignment, names []string) assignment {
		count := map[string]int{}
		perJob := map[string]map[int32]int{}
		for _, n := range names {
			perJob[n] = map[int32]int{}
		}
		a := assignment{members: names, owner: make([]int32, len(w.targets))}
		at := map[string]int32{}
		for i, n := range names {
			at[n] = int32(i)
		}
		for i := range a.owner {
			a.owner[i] = -1
			if o, ok := at[prev.ownerName(i)]; ok {
				a.owner[i] = o
				count[names[o]]++
				perJob[names[o]][w.job[i]]++
			}
		}
		for i, o := range a.owner {
			if o >= 0 {
				continue
			}
			var col string
			for _, v := range names {
				switch {
				case col == "" || count[v] < count[col]:
					col = v
				case count[v] == count[col]:
					if pv, pc := perJob[v][w.job[i]], perJob[col][w.job[i]]; pv < pc || (pv == pc && v < col) {
						col = v
					}
				}
			}
			a.owner[i] = at[col]
			count[col]++
			perJob[col][w.job[i]]++
		}
		return a
	}
	none := assignment{owner: make([]int32, len(w.targets))}
	for i := range none.owner {
		none.owner[i] = -1
	}
	wantFirst := naive(none, names)
	for i := range wantFirst.owner {
		if first.ownerName(i) != wantFirst.ownerName(i) {
			t.Fatalf("target %d: placed on %s, the allocator puts it on %s", i, first.ownerName(i), wantFirst.ownerName(i))
		}
	}
	wantIn := naive(first, []string{"c", "a", "b", "d", "f"})
	for i := range wantIn.owner {
		if in.ownerName(i) != wantIn.ownerName(i) {
			t.Fatalf("after removing e, target %d: on %s, the allocator puts it on %s", i, in.ownerName(i), wantIn.ownerName(i))
		}
	}
}
