package placement

import (
	"fmt"
	"slices"
	"testing"
)

// BenchmarkPlan times Plan alone on balanced clusters (rendezvous placement
// then one plan), for the events the rebalancer reacts to:
//
//	go test -run=^$ -bench=BenchmarkPlan -benchmem ./pkg/placement/
//
// cpu-ms/op is the process CPU time per plan, the figure to read on a
// shared machine where ns/op includes waiting for a core.
func BenchmarkPlan(b *testing.B) {
	for _, size := range []struct{ targets, members int }{{100_000, 100}, {800_000, 10}, {800_000, 1000}} {
		balanced := func() Cluster {
			c := zipfCluster(1, size.targets, size.members)
			return applyPlan(b, c, Plan(c, nil, PlanConfig{}))
		}()
		cases := []struct {
			name  string
			c     Cluster
			drain map[string]bool
		}{
			{"steady", balanced, nil},
			{"scale-out", func() Cluster {
				c := balanced
				c.Members = append(slices.Clone(c.Members), Member{ID: "new", Weight: 1})
				return c
			}(), nil},
			{"scale-in", func() Cluster {
				c := balanced
				c.Members = c.Members[1:]
				return c
			}(), nil},
			{"drain", balanced, map[string]bool{balanced.Members[0].ID: true}},
		}
		for _, tc := range cases {
			b.Run(fmt.Sprintf("%s/targets=%d/members=%d", tc.name, size.targets, size.members), func(b *testing.B) {
				benchPlan(b, tc.c, tc.drain, PlanConfig{})
			})
		}
	}
	// Three zones, every target in one of them, one zone-aware scraper joins.
	b.Run("zone-aware-scale-out/targets=800000/members=1000", func(b *testing.B) {
		c := zipfCluster(2, 800_000, 1000)
		for i := range c.Members {
			c.Members[i].Zone = fmt.Sprint("z", i%3)
		}
		for i := range c.Targets {
			c.Targets[i].Zone = fmt.Sprint("z", c.Targets[i].Key%3)
		}
		cfg := PlanConfig{ZoneAware: true}
		c = applyPlan(b, c, Plan(c, nil, cfg))
		c.Members = append(slices.Clone(c.Members), Member{ID: "new", Weight: 1, Zone: "z1"})
		benchPlan(b, c, nil, cfg)
	})
}

func benchPlan(b *testing.B, c Cluster, drain map[string]bool, cfg PlanConfig) {
	b.ReportAllocs()
	var moves []Move
	cpu := processCPU()
	for b.Loop() {
		moves = Plan(c, drain, cfg)
	}
	b.ReportMetric(float64((processCPU()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(len(moves)), "moves")
}
