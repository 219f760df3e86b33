package targetallocator

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// benchAPI is an API's state without its etcd and NATS parts: a catalog of
// n targets over jobs jobs, and claims spread over collectors.
func benchAPI(b *testing.B, n, jobs int, collectors []string, claimed bool) *API {
	b.Helper()
	a := &API{
		cfg:       Config{}.withDefaults(),
		metrics:   newMetrics(nil),
		answers:   newAnswerCache(),
		unowned:   map[string]time.Time{},
		attempted: map[string]int64{},
	}
	a.cat = newCatalog(func(bool) {})
	a.mir = newMirror(nil, leases.Keyspace{}, slog.New(slog.DiscardHandler), func() {})
	for i := range n {
		job := fmt.Sprintf("job-%d", i%jobs)
		t := target(job, i)
		a.cat.UpsertTarget(t)
		if claimed {
			a.mir.claims[t.ID] = leases.Claim{Target: t.ID, Owner: collectors[i%len(collectors)], Epoch: int64(i + 1)}
		}
	}
	a.cat.Synced()
	return a
}

// go test -run '^$' -bench . -benchmem ./pkg/targetallocator/
func BenchmarkAnswer(b *testing.B) {
	cs := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6"}
	a := benchAPI(b, 100000, 20, cs, true) // 5000 targets per job, ~714 per collector and job
	b.Run("unchanged", func(b *testing.B) {
		a.answerFor("job-3", "c3")
		for b.Loop() {
			a.answerFor("job-3", "c3")
		}
	})
	b.Run("after a change", func(b *testing.B) {
		for b.Loop() {
			a.mir.mu.Lock()
			a.mir.gen++
			a.mir.mu.Unlock()
			a.answerFor("job-3", "c3")
		}
	})
}

func BenchmarkPlan(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("targets=%d/unowned", n), func(b *testing.B) {
			cs := []string{"c0", "c1", "c2"}
			a := benchAPI(b, n, 20, cs, false)
			mine := map[string]*collector{}
			var ms []placement.Member
			for _, id := range cs {
				mine[id] = &collector{id: id}
				ms = append(ms, placement.Member{ID: id, Weight: 1})
			}
			r := placement.NewRanker(ms)
			var pref [events.Slots]string
			for s, k := range slotKeys {
				pref[s] = ms[r.Preferred(k)].ID
			}
			for b.Loop() {
				w, _ := a.plan(time.Now(), mine, &pref, &pref)
				if len(w.claim) != len(cs) {
					b.Fatalf("claims for %d collectors", len(w.claim))
				}
			}
		})
	}
}
