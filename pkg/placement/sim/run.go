package main

import (
	"fmt"
	"runtime"
	"time"
)

// phase is one step of a run.
type phase string

const (
	phaseInitial  phase = "initial"
	phaseScaleOut phase = "scale-out"
	phaseScaleIn  phase = "scale-in"
)

var phases = []phase{phaseInitial, phaseScaleOut, phaseScaleIn}

// result is what one strategy did in one phase.
type result struct {
	Moved      float64 // fraction of targets whose owner changed (initial: allot's balancing moves)
	Ratio      float64 // busiest/mean by series
	CountRatio float64 // busiest/mean by targets
	Empty      int     // scrapers without targets
	Unowned    int     // targets without a scraper
	Wall, CPU  time.Duration
	Members    int
}

// caseResult is one (targets, scrapers, strategy) run through every phase.
type caseResult struct {
	Targets, Scrapers int
	Strategy          string
	Phases            map[phase]result
}

// runCase places the workload on n scrapers with the strategy, then from
// that placement scales out to n+1 and, separately, in to n-1.
func runCase(w *workload, strategyName string, n int) (caseResult, error) {
	cr := caseResult{Targets: len(w.targets), Scrapers: n, Strategy: strategyName, Phases: map[phase]result{}}
	names := scraperNames(n + 1)

	s, err := newStrategy(strategyName, w)
	if err != nil {
		return cr, err
	}
	var initial assignment
	r := measure(w, func() assignment { initial = s.Place(names[:n]); return initial }, nil)
	if as, ok := s.(*allotStrategy); ok {
		// What the balancing plan moved off the rendezvous placement.
		r.Moved = as.initialMoved
	}
	cr.Phases[phaseInitial] = r

	// Strategies keep state between calls: the scale-in starts from a copy
	// of the initial placement's.
	in := s.Clone()
	cr.Phases[phaseScaleOut] = measure(w, func() assignment { return s.Rescale(initial, names[:n+1]) }, &initial)

	if n > 1 {
		s = in
		// The scraper that leaves is one in the middle, not the newest.
		without := append(append([]string(nil), names[:n/2]...), names[n/2+1:n]...)
		cr.Phases[phaseScaleIn] = measure(w, func() assignment { return s.Rescale(initial, without) }, &initial)
	}
	return cr, nil
}

// measure runs one placement step, timing it, and describes the result
// (compared with prev, if given).
func measure(w *workload, step func() assignment, prev *assignment) result {
	runtime.GC()
	cpu0, wall0 := cpuTime(), time.Now()
	a := step()
	r := result{Wall: time.Since(wall0), CPU: cpuTime() - cpu0, Members: len(a.members)}

	load := make([]float64, len(a.members))
	count := make([]float64, len(a.members))
	var total, owned float64
	for t, o := range a.owner {
		if o < 0 {
			r.Unowned++
			continue
		}
		load[o] += w.targets[t].Series
		count[o]++
		total += w.targets[t].Series
		owned++
	}
	var busiest, busiestCount float64
	for i := range load {
		busiest, busiestCount = max(busiest, load[i]), max(busiestCount, count[i])
		if count[i] == 0 {
			r.Empty++
		}
	}
	if n := float64(len(a.members)); n > 0 && total > 0 {
		r.Ratio = busiest / (total / n)
		r.CountRatio = busiestCount / (owned / n)
	}
	if prev != nil {
		moved := 0
		for t := range a.owner {
			if a.ownerName(t) != prev.ownerName(t) {
				moved++
			}
		}
		r.Moved = float64(moved) / float64(len(a.owner))
	}
	return r
}

func (r result) String() string {
	return fmt.Sprintf("moved=%.5f ratio=%.4f count=%.4f empty=%d unowned=%d cpu=%v wall=%v",
		r.Moved, r.Ratio, r.CountRatio, r.Empty, r.Unowned, r.CPU, r.Wall)
}
