package scraper

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
)

// TestFailoverAfterRankingChange changes the ranking without a failure
// (c is drained, or c leaves), then takes a away, and checks that every
// target of a goes to b and none to c. In a pool this small every scraper
// follows the whole catalog but keeps only its first- and second-choice
// targets, so b learns of some of a's targets only when their claims go.
func TestFailoverAfterRankingChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change string // "drain" or "leave": what happens to c first
		fail   func(*running)
	}{
		{"c drained, a killed", "drain", (*running).kill},
		{"c drained, a stopped", "drain", (*running).stop},
		{"c left, a killed", "leave", (*running).kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			all := ids(f.putTargets("", 60))
			a, b, c := f.start("a", testTTL), f.start("b", testTTL), f.start("c", testTTL)
			f.waitMembers("a", "b", "c")
			var before map[string]string
			require.Eventually(t, func() bool {
				before = f.claims()
				return len(before) == len(all)
			}, 20*time.Second, 20*time.Millisecond, "every target claimed")
			var kept []string
			for id, owner := range before {
				if owner == "c" {
					kept = append(kept, id)
				}
			}

			// Undrained, c is first choice for about half of a's targets
			// once a is gone: those are what the drain must keep from it.
			undrainedC := newRanking(self("c"), members("b", "c"), nil)
			wouldTake := 0
			switch tc.change {
			case "drain":
				_, err := f.cli.Put(ctx, f.ks.Drain("c"), `{"scraper":"c","by":"test"}`)
				require.NoError(t, err)
				for _, r := range []*running{b, c} {
					require.Eventually(t, func() bool { return r.rankedDrained("c") }, 10*time.Second, 20*time.Millisecond,
						"%s ranks without c", r.s.ID())
				}
			case "leave":
				c.stop()
				f.waitMembers("a", "b")
				require.Eventually(t, func() bool {
					cs := f.claims()
					for _, id := range all {
						if o := cs[id]; o != "a" && o != "b" {
							return false
						}
					}
					return true
				}, 20*time.Second, 20*time.Millisecond, "c's targets taken over")
			}
			var victims []string
			for id, owner := range f.claims() {
				if owner == "a" {
					victims = append(victims, id)
					if undrainedC.rank(events.SlotOf(id)) == 0 {
						wouldTake++
					}
				}
			}
			require.NotEmpty(t, victims, "a owns nothing")
			unknown := len(victims) - b.knowsOf(victims)
			if tc.change == "drain" {
				require.NotZero(t, wouldTake, "c would take none of a's %d targets anyway", len(victims))
			}

			tc.fail(a)
			var stolen []string
			require.Eventually(t, func() bool {
				cs := f.claims()
				done := true
				stolen = stolen[:0]
				for _, id := range victims {
					switch cs[id] {
					case "b":
					case "c":
						stolen = append(stolen, id)
					default:
						done = false
					}
				}
				return done || len(stolen) > 0
			}, 20*time.Second, 20*time.Millisecond, "a's targets claimed")
			require.Empty(t, stolen, "c claimed %d of a's %d targets (%d were its first choice undrained)",
				len(stolen), len(victims), wouldTake)
			if tc.change == "drain" {
				// Drain alone takes nothing from c: moving its targets off
				// is the rebalancer's job.
				cs := f.claims()
				for _, id := range kept {
					require.Equal(t, "c", cs[id], "target %s", id)
				}
			}
			t.Logf("all %d targets of a went to b, %d of which b learnt of only when a went; c took none of the %d it ranked first for undrained",
				len(victims), unknown, wouldTake)
		})
	}
}

// rankedDrained says whether the scraper's current ranking leaves out id as
// drained.
func (r *running) rankedDrained(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var ok bool
	r.s.call(ctx, func() { ok = r.s.a.rank != nil && r.s.a.rank.drained[id] })
	return ok
}

// knowsOf is how many of ids the scraper's actor has.
func (r *running) knowsOf(ids []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n := 0
	r.s.call(ctx, func() {
		for _, id := range ids {
			if _, known := r.s.a.targets[id]; known {
				n++
			}
		}
	})
	return n
}
