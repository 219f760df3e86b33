package discoverer

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
)

// benchConfig is a Kubernetes-like job: pod labels mapped, a namespace
// kept, one label copied.
const benchConfig = `
scrape_configs:
  - job_name: pods
    relabel_configs:
      - source_labels: [__meta_kubernetes_namespace]
        regex: ns-.*
        action: keep
      - regex: __meta_kubernetes_pod_label_(.+)
        action: labelmap
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
`

// benchTarget is one pod as Kubernetes SD reports it (a few meta labels).
func benchTarget(g, i, version int) model.LabelSet {
	n := g*1000 + i
	return model.LabelSet{
		model.AddressLabel:                     model.LabelValue(fmt.Sprintf("10.%d.%d.%d:8080", n>>16&0xff, n>>8&0xff, n&0xff)),
		"__meta_kubernetes_namespace":          model.LabelValue(fmt.Sprintf("ns-%d", g%50)),
		"__meta_kubernetes_pod_name":           model.LabelValue(fmt.Sprintf("app-%d-%d-%d", g, i, version)),
		"__meta_kubernetes_pod_label_app":      model.LabelValue(fmt.Sprintf("app-%d", g%200)),
		"__meta_kubernetes_pod_label_version":  model.LabelValue(fmt.Sprintf("v%d", version)),
		"__meta_kubernetes_pod_container_name": "main",
		"__meta_kubernetes_pod_ready":          "true",
		"__meta_kubernetes_pod_node_name":      model.LabelValue(fmt.Sprintf("node-%d", n%500)),
	}
}

func benchGroup(g, perGroup, version int) *targetgroup.Group {
	tg := &targetgroup.Group{Source: fmt.Sprintf("pod/ns-%d/group-%d", g%50, g), Targets: make([]model.LabelSet, perGroup)}
	for i := range perGroup {
		tg.Targets[i] = benchTarget(g, i, version)
	}
	return tg
}

func benchGroups(targets, perGroup int) []*targetgroup.Group {
	groups := make([]*targetgroup.Group, targets/perGroup)
	for g := range groups {
		groups[g] = benchGroup(g, perGroup, 0)
	}
	return groups
}

// fillCatalog applies groups as a provider's initial updates, in chunks.
func fillCatalog(b *testing.B, c *catalog, groups []*targetgroup.Group) {
	b.Helper()
	for chunk := range slices.Chunk(groups, 10000) {
		c.apply([]update{{job: "pods", provider: 1, groups: chunk}})
	}
}

// BenchmarkDiffOneChange measures what one changed group costs a leader
// whose catalog already holds N targets: relabel the group, diff it
// against its previous version, and resolve the changes into the events
// that would be published (everything but the NATS round trip). The
// changed group alternates between two versions, so every iteration
// replaces perGroup targets (one put and one delete each).
//
//	go test -run '^$' -bench BenchmarkDiffOneChange -benchmem ./services/discoverer/
func BenchmarkDiffOneChange(b *testing.B) {
	for _, shape := range []struct {
		name     string
		perGroup int
	}{
		{"pods", 1},            // Kubernetes pod role: one target per group
		{"groups_of_100", 100}, // e.g. endpoints or file SD
	} {
		for _, n := range []int{80_000, 800_000} {
			b.Run(fmt.Sprintf("%s/targets=%d", shape.name, n), func(b *testing.B) {
				c := newCatalog()
				c.setJobs(jobSpecs(b, loadConfig(b, benchConfig)))
				fillCatalog(b, c, benchGroups(n, shape.perGroup))
				c.track(true)
				if act, _, _ := c.counts("pods"); act != n {
					b.Fatalf("catalog holds %d targets, want %d", act, n)
				}
				// The group that changes lies in the middle of the catalog.
				g := n / shape.perGroup / 2
				versions := []*targetgroup.Group{benchGroup(g, shape.perGroup, 1), benchGroup(g, shape.perGroup, 0)}
				var events int
				i := 0
				runtime.GC()
				cpu0 := processCPU()
				for b.Loop() {
					c.apply([]update{{job: "pods", provider: 1, groups: []*targetgroup.Group{versions[i%2]}}})
					i++
					ch := c.takeChanges()
					puts, dels := c.resolveTargets(slices.Collect(maps.Keys(ch.targets)))
					events = len(puts) + len(dels)
				}
				if events != 2*shape.perGroup {
					b.Fatalf("one change published %d events, want %d", events, 2*shape.perGroup)
				}
				b.ReportMetric(float64(events), "events/op")
				// CPU time includes the GC work the allocations cause.
				b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkMemoryPerTarget measures the heap the discoverer's state takes
// per target at 100k targets (one pod per group, as with Kubernetes SD):
// relabelled labels, IDs, reference counts, group bookkeeping. The target
// groups themselves are built first and not counted: discovery holds them
// whether or not allot does; their size is reported apart as sd-B/target.
//
//	go test -run '^$' -bench BenchmarkMemoryPerTarget -benchmem ./services/discoverer/
func BenchmarkMemoryPerTarget(b *testing.B) {
	const n = 100_000
	specs := jobSpecs(b, loadConfig(b, benchConfig))
	var ms runtime.MemStats
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var state, sd float64
	for b.Loop() {
		b.StopTimer()
		h0 := heap()
		groups := benchGroups(n, 1)
		h1 := heap()
		b.StartTimer()
		c := newCatalog()
		c.setJobs(specs)
		fillCatalog(b, c, groups)
		b.StopTimer()
		h2 := heap()
		state += float64(h2-h1) / n
		sd += float64(h1-h0) / n
		runtime.KeepAlive(groups)
		runtime.KeepAlive(c)
		b.StartTimer()
	}
	b.ReportMetric(state/float64(b.N), "state-B/target")
	b.ReportMetric(sd/float64(b.N), "sd-B/target")
}
