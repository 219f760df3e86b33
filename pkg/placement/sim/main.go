package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("sim: ")
	var (
		targets    = flag.String("targets", "100000,800000", "comma-separated numbers of targets")
		scrapers   = flag.String("scrapers", "10,100,1000", "comma-separated numbers of scrapers (N)")
		strategies = flag.String("strategies", strings.Join(strategyNames, ","), "comma-separated strategies")
		wl         = defaultWorkload(0)
	)
	flag.Uint64Var(&wl.Seed, "seed", wl.Seed, "random seed for the workload")
	flag.Float64Var(&wl.ZipfS, "zipf-s", wl.ZipfS, "Zipf exponent s (> 1) of the per-target series")
	flag.Float64Var(&wl.ZipfV, "zipf-v", wl.ZipfV, "Zipf v (>= 1)")
	flag.Uint64Var(&wl.ZipfMax, "zipf-max", wl.ZipfMax, "largest Zipf draw k; series = unit × (1+k)")
	flag.Float64Var(&wl.Unit, "unit", wl.Unit, "series per Zipf step")
	flag.IntVar(&wl.Jobs, "jobs", wl.Jobs, "number of scrape jobs the targets are spread over")
	flag.Parse()

	ts, err := ints(*targets)
	if err != nil {
		log.Fatalf("-targets: %v", err)
	}
	ns, err := ints(*scrapers)
	if err != nil {
		log.Fatalf("-scrapers: %v", err)
	}
	names := strings.Split(*strategies, ",")
	for _, s := range names {
		if _, err := newStrategy(s, nil); err != nil {
			log.Fatal(err)
		}
	}
	if wl.ZipfS <= 1 || wl.ZipfV < 1 || wl.Jobs < 1 {
		log.Fatal("need -zipf-s > 1, -zipf-v >= 1 and -jobs >= 1")
	}

	var results []caseResult
	var summaries []string
	for _, t := range ts {
		cfg := wl
		cfg.Targets = t
		w := newWorkload(cfg)
		mean, median, p99, max := w.seriesSummary()
		summaries = append(summaries, fmt.Sprintf("%d targets: series mean %.0f, median %.0f, p99 %.0f, max %.0f, total %.3g",
			t, mean, median, p99, max, mean*float64(t)))
		for _, n := range ns {
			for _, s := range names {
				start := time.Now()
				cr, err := runCase(w, s, n)
				if err != nil {
					log.Fatal(err)
				}
				log.Printf("%d targets, %d scrapers, %s: %v", t, n, s, time.Since(start).Round(time.Millisecond))
				results = append(results, cr)
			}
		}
	}
	report(os.Stdout, wl, os.Args[1:], summaries, names, results)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

var titles = map[string]string{
	"allot":                 "allot",
	"ta-consistent-hashing": "TA consistent-hashing",
	"ta-least-weighted":     "TA least-weighted",
	"hash-mod-n":            "hash % N",
}

// report prints the results as markdown: one table per phase with the
// strategies side by side, and allot's figures over the Target Allocator's
// consistent-hashing ones.
func report(out io.Writer, wl workloadConfig, args []string, summaries, strategies []string, results []caseResult) {
	fmt.Fprintf(out, "Command: `go run ./pkg/placement/sim %s`\n\n", strings.Join(args, " "))
	fmt.Fprintf(out, "Series per target: %g × (1 + k), k ~ Zipf(s=%g, v=%g, max=%d), seed %d, %d jobs.\n",
		wl.Unit, wl.ZipfS, wl.ZipfV, wl.ZipfMax, wl.Seed, wl.Jobs)
	for _, s := range summaries {
		fmt.Fprintf(out, "- %s\n", s)
	}
	fmt.Fprintln(out, "\nmoved: fraction of targets whose scraper changed; ÷ ideal: that over the least that must move, 1/(N+1) on scale-out (aim ≤ 1.1) and 1/N on scale-in.")
	fmt.Fprintln(out, "busiest/mean: the busiest scraper's load over the mean, by series (aim ≤ 1.05) and by target count.")
	fmt.Fprintln(out, "CPU ms: process CPU time of the step (GC included). allot: the initial step is rendezvous placement plus a plan, a scaling step is one `placement.Plan`;")
	fmt.Fprintln(out, "TA consistent-hashing: building the ring and locating every target (what the TA does on a collector change); least-weighted: assigning the unowned targets.")

	type key struct {
		t, n int
		s    string
	}
	byKey := map[key]caseResult{}
	var sizes []key
	for _, r := range results {
		k := key{r.Targets, r.Scrapers, ""}
		if _, seen := byKey[k]; !seen {
			sizes = append(sizes, k)
			byKey[k] = caseResult{}
		}
		byKey[key{r.Targets, r.Scrapers, r.Strategy}] = r
	}
	hasTA := false
	for _, s := range strategies {
		hasTA = hasTA || s == "ta-consistent-hashing"
	}

	type metric struct {
		name string
		get  func(result, int) float64
		f    func(float64) string
	}
	ratio := func(v float64) string { return fmt.Sprintf("%.3f", v) }
	metrics := []metric{
		{"moved", func(r result, _ int) float64 { return r.Moved }, func(v float64) string { return fmt.Sprintf("%.3f%%", 100*v) }},
		{"moved ÷ ideal", func(r result, ideal int) float64 { return r.Moved * float64(ideal) }, ratio},
		{"busiest/mean, series", func(r result, _ int) float64 { return r.Ratio }, ratio},
		{"busiest/mean, targets", func(r result, _ int) float64 { return r.CountRatio }, ratio},
		{"empty scrapers", func(r result, _ int) float64 { return float64(r.Empty) }, func(v float64) string { return fmt.Sprint(v) }},
		{"CPU ms", func(r result, _ int) float64 { return float64(r.CPU.Microseconds()) / 1000 }, func(v float64) string { return fmt.Sprintf("%.1f", v) }},
	}
	for _, ph := range phases {
		switch ph {
		case phaseInitial:
			fmt.Fprintf(out, "\n### Initial placement on N scrapers (allot's moved: what its plan moved off the rendezvous placement)\n\n")
		case phaseScaleOut:
			fmt.Fprintf(out, "\n### Scale-out N → N+1\n\n")
		case phaseScaleIn:
			fmt.Fprintf(out, "\n### Scale-in N → N−1 (a scraper in the middle leaves)\n\n")
		}
		fmt.Fprint(out, "| targets | N | |")
		for _, s := range strategies {
			fmt.Fprintf(out, " %s |", titles[s])
		}
		if hasTA {
			fmt.Fprint(out, " allot ÷ TA-CH |")
		}
		fmt.Fprint(out, "\n|---:|---:|---|")
		for range strategies {
			fmt.Fprint(out, "---:|")
		}
		if hasTA {
			fmt.Fprint(out, "---:|")
		}
		fmt.Fprintln(out)
		for _, size := range sizes {
			if ph == phaseScaleIn && size.n < 2 {
				continue
			}
			// 1/ideal: the share of targets that has to move at least.
			ideal := map[phase]int{phaseScaleOut: size.n + 1, phaseScaleIn: size.n}[ph]
			for i, m := range metrics {
				if ph == phaseInitial && m.name == "moved ÷ ideal" {
					continue
				}
				if i == 0 {
					fmt.Fprintf(out, "| %d | %d | %s |", size.t, size.n, m.name)
				} else {
					fmt.Fprintf(out, "| | | %s |", m.name)
				}
				for _, s := range strategies {
					r, ok := byKey[key{size.t, size.n, s}].Phases[ph]
					if !ok || (ph == phaseInitial && m.name == "moved" && s != "allot") {
						fmt.Fprint(out, " – |")
						continue
					}
					fmt.Fprintf(out, " %s |", m.f(m.get(r, ideal)))
				}
				if hasTA {
					a, okA := byKey[key{size.t, size.n, "allot"}].Phases[ph]
					c, okC := byKey[key{size.t, size.n, "ta-consistent-hashing"}].Phases[ph]
					switch va, vc := m.get(a, ideal), m.get(c, ideal); {
					case !okA || !okC || m.name == "empty scrapers" || vc == 0 || ph == phaseInitial && m.name == "moved":
						fmt.Fprint(out, " |")
					default:
						fmt.Fprintf(out, " %.3f |", va/vc)
					}
				}
				fmt.Fprintln(out)
			}
		}
	}
	fmt.Fprintln(out)
}
