package placement

import "math"

// Stats describes how evenly a cluster's targets are spread. Loads are per
// unit of member weight, so with equal weights they are plain loads.
type Stats struct {
	// Busiest and Mean are the largest and the mean series per unit of
	// weight over the members; Ratio is Busiest/Mean (1 when perfectly
	// even, and when there is no load at all).
	Busiest, Mean, Ratio float64
	// ByCountRatio is Ratio measured in targets instead of series.
	ByCountRatio float64
	// Empty is the number of members that own no target.
	Empty int
	// Unowned is the number of targets whose Owner is empty or not a member.
	Unowned int
}

// Measure computes the balance of the cluster as it is (owned targets only).
func Measure(c Cluster) Stats {
	n := len(c.Members)
	idx := make(map[string]int, n)
	for i, m := range c.Members {
		if _, dup := idx[m.ID]; !dup {
			idx[m.ID] = i
		}
	}
	load := make([]float64, n)
	count := make([]float64, n)
	var st Stats
	var total, totalCount float64
	for t := range c.Targets {
		tg := &c.Targets[t]
		i, ok := idx[tg.Owner]
		if tg.Owner == "" || !ok {
			st.Unowned++
			continue
		}
		s := series(tg)
		load[i] += s
		count[i]++
		total += s
		totalCount++
	}
	var wsum, busiest, busiestCount float64
	for i, m := range c.Members {
		if idx[m.ID] != i {
			continue
		}
		w := weight(m)
		wsum += w
		busiest = math.Max(busiest, load[i]/w)
		busiestCount = math.Max(busiestCount, count[i]/w)
		if count[i] == 0 {
			st.Empty++
		}
	}
	st.Busiest, st.Ratio, st.ByCountRatio = busiest, 1, 1
	if wsum > 0 {
		st.Mean = total / wsum
	}
	if st.Mean > 0 {
		st.Ratio = busiest / st.Mean
	}
	if totalCount > 0 {
		st.ByCountRatio = busiestCount / (totalCount / wsum)
	}
	return st
}

// Recommend returns how many scrapers of weight 1 the cluster's targets
// need when one scraper should carry at most perScraperSeries series on
// average: ceil(total series / perScraperSeries), at least 1. Balance keeps
// the busiest within the plan's tolerance of that average, so leave that
// much headroom in perScraperSeries. With perScraperSeries <= 0 it has no
// opinion and returns the current number of members.
func Recommend(c Cluster, perScraperSeries float64) int {
	if !(perScraperSeries > 0) || math.IsInf(perScraperSeries, 1) {
		return len(c.Members)
	}
	var total float64
	for t := range c.Targets {
		total += series(&c.Targets[t])
	}
	n := math.Ceil(total / perScraperSeries)
	if n < 1 {
		return 1
	}
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(n)
}
