package main

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/allot-dev/allot/pkg/placement"
)

// workloadConfig describes the simulated targets.
type workloadConfig struct {
	Targets int
	Seed    uint64
	// Series of a target is Unit × (1 + k), k drawn from Zipf(S, V, Max).
	ZipfS, ZipfV float64
	ZipfMax      uint64
	Unit         float64
	Jobs         int
}

func defaultWorkload(targets int) workloadConfig {
	return workloadConfig{Targets: targets, Seed: 1, ZipfS: 1.2, ZipfV: 1, ZipfMax: 999, Unit: 100, Jobs: 50}
}

// workload is a set of targets shared by every strategy of a run.
type workload struct {
	cfg     workloadConfig
	targets []placement.Target // allot's view: ID, key, series
	addr    []string           // __address__, what the Target Allocator hashes
	job     []int32
	index   map[string]int32 // target ID -> index
}

func newWorkload(cfg workloadConfig) *workload {
	r := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	z := rand.NewZipf(r, cfg.ZipfS, cfg.ZipfV, cfg.ZipfMax)
	w := &workload{
		cfg:     cfg,
		targets: make([]placement.Target, cfg.Targets),
		addr:    make([]string, cfg.Targets),
		job:     make([]int32, cfg.Targets),
		index:   make(map[string]int32, cfg.Targets),
	}
	for i := range w.targets {
		job := int32(r.IntN(cfg.Jobs))
		addr := fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 9100+i>>24)
		// Like a real target ID: FNV-1a 64 of the job and the final labels.
		id := fmt.Sprintf("%016x", placement.HashString(fmt.Sprintf("job-%d\xff__address__\xff%s", job, addr)))
		w.targets[i] = placement.Target{ID: id, Key: placement.HashString(id), Series: cfg.Unit * float64(1+z.Uint64())}
		w.addr[i], w.job[i] = addr, job
		w.index[id] = int32(i)
	}
	return w
}

// seriesSummary describes the load distribution for the report.
func (w *workload) seriesSummary() (mean, median, p99, max float64) {
	s := make([]float64, len(w.targets))
	var total float64
	for i, t := range w.targets {
		s[i] = t.Series
		total += t.Series
	}
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0, 0, 0, 0
	}
	return total / float64(n), s[n/2], s[n*99/100], s[n-1]
}

// scraperNames are the member (collector) names every strategy uses.
func scraperNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("scraper-%d", i)
	}
	return names
}
