package main

import (
	"fmt"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"

	"github.com/allot-dev/allot/pkg/placement"
)

// assignment is who owns each target: owner[t] indexes members, -1 for none.
type assignment struct {
	members []string
	owner   []int32
}

func (a assignment) ownerName(t int) string {
	if o := a.owner[t]; o >= 0 {
		return a.members[o]
	}
	return ""
}

// strategy is one way of placing the workload's targets on scrapers.
// Implementations keep whatever state the real thing keeps between calls.
type strategy interface {
	Name() string
	// Place assigns every target from scratch.
	Place(members []string) assignment
	// Rescale reacts to the member set changing from prev to members.
	Rescale(prev assignment, members []string) assignment
	// Clone copies the strategy with its state, to run another scenario
	// from the same point.
	Clone() strategy
}

var strategyNames = []string{"allot", "ta-consistent-hashing", "ta-least-weighted", "hash-mod-n"}

func newStrategy(name string, w *workload) (strategy, error) {
	switch name {
	case "allot":
		return &allotStrategy{w: w}, nil
	case "ta-consistent-hashing":
		return &consistentHashing{w: w}, nil
	case "ta-least-weighted":
		return &leastWeighted{w: w}, nil
	case "hash-mod-n":
		return &hashModN{w: w}, nil
	}
	return nil, fmt.Errorf("unknown strategy %q (known: %v)", name, strategyNames)
}

// allotStrategy: rendezvous-preferred owners, then placement.Plan.
type allotStrategy struct {
	w            *workload
	cluster      placement.Cluster
	cfg          placement.PlanConfig
	initialMoved float64 // fraction moved by the plan after the rendezvous start
}

func (*allotStrategy) Name() string { return "allot" }

func (s *allotStrategy) Clone() strategy {
	c := *s
	c.cluster.Members = slices.Clone(s.cluster.Members)
	c.cluster.Targets = slices.Clone(s.cluster.Targets)
	return &c
}

func members(names []string) []placement.Member {
	ms := make([]placement.Member, len(names))
	for i, n := range names {
		ms[i] = placement.Member{ID: n, Weight: 1}
	}
	return ms
}

func (s *allotStrategy) Place(names []string) assignment {
	ms := members(names)
	rk := placement.NewRanker(ms)
	ts := slices.Clone(s.w.targets)
	for i := range ts {
		ts[i].Owner = names[rk.Preferred(ts[i].Key)]
	}
	s.cluster = placement.Cluster{Members: ms, Targets: ts}
	s.initialMoved = float64(s.plan()) / float64(max(len(ts), 1))
	return s.assignment()
}

func (s *allotStrategy) Rescale(_ assignment, names []string) assignment {
	// Targets of a departed scraper keep its name as owner: to Plan that is
	// an owner that is no longer a member, as when its lease expires.
	s.cluster.Members = members(names)
	s.plan()
	return s.assignment()
}

func (s *allotStrategy) plan() int {
	moves := placement.Plan(s.cluster, nil, s.cfg)
	for _, m := range moves {
		s.cluster.Targets[s.w.index[m.Target]].Owner = m.To
	}
	return len(moves)
}

func (s *allotStrategy) assignment() assignment {
	a := assignment{owner: make([]int32, len(s.cluster.Targets))}
	at := make(map[string]int32, len(s.cluster.Members))
	for i, m := range s.cluster.Members {
		a.members = append(a.members, m.ID)
		at[m.ID] = int32(i)
	}
	for i, t := range s.cluster.Targets {
		if o, ok := at[t.Owner]; ok {
			a.owner[i] = o
		} else {
			a.owner[i] = -1
		}
	}
	return a
}

// consistentHashing is the Target Allocator's consistent-hashing strategy
// (cmd/otel-allocator/internal/allocation/consistent_hashing.go): the
// hasher is rebuilt from the collector list on every change and every
// target is located again by its address.
type consistentHashing struct{ w *workload }

func (*consistentHashing) Name() string { return "ta-consistent-hashing" }

func (s *consistentHashing) Clone() strategy { c := *s; return &c }

type xxhasher struct{}

func (xxhasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

type collector string

func (c collector) String() string { return string(c) }

func (s *consistentHashing) Place(names []string) assignment {
	ms := make([]consistent.Member, len(names))
	at := make(map[string]int32, len(names))
	for i, n := range names {
		ms[i] = collector(n)
		at[n] = int32(i)
	}
	ring := consistent.New(ms, consistent.Config{
		PartitionCount:    1061,
		ReplicationFactor: 5,
		Load:              1.1,
		Hasher:            xxhasher{},
	})
	a := assignment{members: names, owner: make([]int32, len(s.w.addr))}
	for i, addr := range s.w.addr {
		a.owner[i] = at[ring.LocateKey([]byte(addr)).String()]
	}
	return a
}

func (s *consistentHashing) Rescale(_ assignment, names []string) assignment { return s.Place(names) }

// leastWeighted is the Target Allocator's least-weighted strategy
// (least_weighted.go, allocator.go): a target without a live collector
// goes to the one with the fewest targets, ties to the one with fewest of
// the target's job, then to the lowest name; a target whose collector
// still exists stays.
type leastWeighted struct {
	w      *workload
	count  []int // per member
	perJob []int // per member × job
}

func (*leastWeighted) Name() string { return "ta-least-weighted" }

// Clone copies nothing that matters: the counts are rebuilt from the
// previous assignment on every call.
func (s *leastWeighted) Clone() strategy { return &leastWeighted{w: s.w} }

func (s *leastWeighted) Place(names []string) assignment {
	a := assignment{members: names, owner: make([]int32, len(s.w.targets))}
	for i := range a.owner {
		a.owner[i] = -1
	}
	s.reset(names, a)
	s.fill(names, a)
	return a
}

func (s *leastWeighted) Rescale(prev assignment, names []string) assignment {
	at := make(map[string]int32, len(names))
	for i, n := range names {
		at[n] = int32(i)
	}
	a := assignment{members: names, owner: make([]int32, len(prev.owner))}
	for t := range prev.owner {
		a.owner[t] = -1
		if o, ok := at[prev.ownerName(t)]; ok {
			a.owner[t] = o
		}
	}
	s.reset(names, a)
	s.fill(names, a)
	return a
}

// reset recounts targets per collector and job for the assignment a.
func (s *leastWeighted) reset(names []string, a assignment) {
	jobs := s.w.cfg.Jobs
	s.count = make([]int, len(names))
	s.perJob = make([]int, len(names)*jobs)
	for t, o := range a.owner {
		if o >= 0 {
			s.count[o]++
			s.perJob[int(o)*jobs+int(s.w.job[t])]++
		}
	}
}

// fill assigns every target without an owner, in target order (the
// Target Allocator walks a map, so its order is arbitrary too), exactly as
// the allocator's comparison over all collectors would; only those with the
// fewest targets can win, so only they are scanned.
func (s *leastWeighted) fill(names []string, a assignment) {
	if len(names) == 0 {
		return
	}
	jobs := s.w.cfg.Jobs
	byName := make([]int32, len(names))
	for i := range byName {
		byName[i] = int32(i)
	}
	slices.SortFunc(byName, func(x, y int32) int { return cmpString(names[x], names[y]) })
	var fewest []int32 // the collectors with the fewest targets, by name
	least := 0
	for t, o := range a.owner {
		if o >= 0 {
			continue
		}
		if len(fewest) == 0 {
			least = s.count[byName[0]]
			for _, c := range byName {
				least = min(least, s.count[c])
			}
			for _, c := range byName {
				if s.count[c] == least {
					fewest = append(fewest, c)
				}
			}
		}
		job := int(s.w.job[t])
		k := 0
		for i, c := range fewest {
			if s.perJob[int(c)*jobs+job] < s.perJob[int(fewest[k])*jobs+job] {
				k = i
			}
		}
		best := fewest[k]
		fewest = slices.Delete(fewest, k, k+1)
		a.owner[t] = best
		s.count[best]++
		s.perJob[int(best)*jobs+job]++
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// hashModN: xxhash of the address modulo the number of scrapers.
type hashModN struct{ w *workload }

func (*hashModN) Name() string { return "hash-mod-n" }

func (s *hashModN) Clone() strategy { c := *s; return &c }

func (s *hashModN) Place(names []string) assignment {
	a := assignment{members: names, owner: make([]int32, len(s.w.addr))}
	n := uint64(len(names))
	for i, addr := range s.w.addr {
		a.owner[i] = int32(xxhash.Sum64String(addr) % n)
	}
	return a
}

func (s *hashModN) Rescale(_ assignment, names []string) assignment { return s.Place(names) }
