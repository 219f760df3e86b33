package scraper

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// startZoned starts scraper id in zone, zone-aware or not.
func (f *fixture) startZoned(id, zone string, aware bool) *running {
	f.t.Helper()
	return f.run(Config{ID: id, Zone: zone, ZoneAware: aware, Session: leases.SessionConfig{TTL: poolTTL}})
}

// TestZones runs scrapers in zones a (two) and b (one) over targets of
// zones a, b, c (no scraper) and none, and checks who claims what: with
// zone awareness, a target of a zone with scrapers goes to its preferred
// scraper of that zone, and any other target to its preferred scraper
// overall, so the targets of c are spread over both zones; without it,
// every target goes to its preferred scraper overall, zones or not. The
// load reports carry each target's figures and zone either way.
func TestZones(t *testing.T) {
	for _, aware := range []bool{true, false} {
		t.Run(fmt.Sprintf("zone-aware=%v", aware), func(t *testing.T) {
			f := newFixture(t)
			scrapers := []*running{f.startZoned("a1", "a", aware), f.startZoned("a2", "a", aware), f.startZoned("b1", "b", aware)}
			f.waitMembers("a1", "a2", "b1")
			members := []placement.Member{{ID: "a1", Weight: 1, Zone: "a"}, {ID: "a2", Weight: 1, Zone: "a"}, {ID: "b1", Weight: 1, Zone: "b"}}

			zoneOf := map[string]string{}
			var ts []events.Target
			for _, z := range []string{"a", "b", "c", ""} {
				for i := range 12 {
					tg := f.target(fmt.Sprintf("/t/%s%d/metrics", z, i))
					if z != "" {
						tg = events.NewTarget(tg.Job, withLabel(tg.Labels, DefaultZoneLabel, z), tg.ConfigHash)
					}
					zoneOf[tg.ID] = z
					ts = append(ts, tg)
				}
			}
			require.NoError(t, f.pub.PutTargets(context.Background(), ts))

			// preferred is where placement puts each target: its slot's
			// first member among those of its zone, when zone-aware and
			// the zone has one; else among all.
			preferred := func(members []placement.Member, id string) string {
				among := members
				if aware {
					if in := slices.DeleteFunc(slices.Clone(members), func(m placement.Member) bool { return m.Zone != zoneOf[id] }); len(in) > 0 {
						among = in
					}
				}
				return among[placement.Rank(slotKeys[events.SlotOf(id)], among, 1)[0]].ID
			}
			waitOwners := func(members []placement.Member) map[string]string {
				t.Helper()
				var claims map[string]string
				require.Eventually(t, func() bool {
					claims = f.claims()
					for id := range zoneOf {
						if claims[id] != preferred(members, id) {
							return false
						}
					}
					return true
				}, 20*time.Second, 50*time.Millisecond, "every target claimed by its preferred scraper")
				return claims
			}
			claims := waitOwners(members)

			zonesOf := map[string]map[string]bool{} // target zone → zones of its owners
			for id, z := range zoneOf {
				if zonesOf[z] == nil {
					zonesOf[z] = map[string]bool{}
				}
				zonesOf[z][claims[id][:1]] = true
			}
			if aware {
				require.Equal(t, map[string]bool{"a": true}, zonesOf["a"])
				require.Equal(t, map[string]bool{"b": true}, zonesOf["b"])
			} else {
				require.Len(t, zonesOf["a"], 2, "zones ignored: spread")
			}
			require.Len(t, zonesOf["c"], 2, "a zone without scrapers: spread")
			require.Len(t, zonesOf[""], 2, "no zone: spread")

			// Load reports: every target with its zone, series and rates.
			require.Eventually(t, func() bool {
				loads, err := leases.ListLoads(context.Background(), f.cli, f.ks)
				if err != nil {
					return false
				}
				n := 0
				for owner, l := range loads {
					for id, tl := range l.PerTarget {
						if claims[id] != owner || tl.Zone != zoneOf[id] || tl.Series != 7 || tl.SamplesPerSecond != 7 || !(tl.ScrapeSecondsPerSecond > 0) {
							return false
						}
						n++
					}
				}
				return n == len(zoneOf)
			}, 20*time.Second, 100*time.Millisecond, "load reports with each target's figures and zone")

			// a1 leaves: zone-aware, its zone-a targets go to a2.
			scrapers[0].stop()
			claims = waitOwners(members[1:])
			if aware {
				for id, z := range zoneOf {
					if z == "a" {
						require.Equal(t, "a2", claims[id], id)
					}
				}
			}
		})
	}
}

func withLabel(ls map[string]string, name, value string) map[string]string {
	out := maps.Clone(ls)
	if out == nil {
		out = map[string]string{}
	}
	out[name] = value
	return out
}
