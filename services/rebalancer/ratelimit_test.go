package rebalancer

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A plan that needs many moves starts them no faster than
// --rebalancer.moves-per-second allows and never has more than
// --rebalancer.max-concurrent-moves in moves/ at once. Both are read from
// etcd's history, not from the rebalancer.
func TestMoveLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		// targets all start on scraper a; about half move to b.
		targets            int
		movesPerSecond     float64
		maxConcurrentMoves int
		// maxPrepare is the destination's preparation (random up to this):
		// long enough that moves overlap and the concurrency bound binds.
		maxPrepare time.Duration
		// Which limit the case is about: its plan needs many more moves
		// than one burst (rate) or than the bound (concurrency), and the
		// concurrency case must reach its bound.
		rateBinds, concurrencyBinds bool
	}{
		{
			name:    "concurrency",
			targets: 40, movesPerSecond: 1000, maxConcurrentMoves: 3,
			maxPrepare: 300 * time.Millisecond, concurrencyBinds: true,
		},
		{
			// About 30 moves with a burst of 10 at 10/s: at least 2 s.
			name:    "rate",
			targets: 60, movesPerSecond: 10, maxConcurrentMoves: 100,
			maxPrepare: 20 * time.Millisecond, rateBinds: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := newTestCluster(t, tc.targets, 11)
			a := c.startScraper("a", simConfig{Seed: 1})
			b := c.startScraper("b", simConfig{Seed: 2, MaxPrepare: tc.maxPrepare})
			require.NoError(t, a.claim(ctx, c.targets))
			cli := c.client()
			w := c.watchMoveKeys()

			cfg := c.testConfig("r1")
			cfg.MovesPerSecond = tc.movesPerSecond
			cfg.MaxConcurrentMoves = tc.maxConcurrentMoves
			r, _, stop := c.runRebalancer(cfg, nil)
			waitFor(t, 30*time.Second, "balanced", func() error {
				claims := c.claims(ctx, cli)
				if ratio := c.seriesRatio(claims, a, b); ratio > 1+DefaultTolerance+DefaultHysteresis {
					return fmt.Errorf("ratio %.3f, owned %v", ratio, countOwned(claims))
				}
				if st := r.Status(); st.Pending+st.Queued > 0 {
					return fmt.Errorf("%d moves pending, %d queued", st.Pending, st.Queued)
				}
				return checkConsistent(claims, c.targets, a, b)
			})
			stop()
			w.Sync(t)
			mc := countMoves(t, w, r.cfg.MoveTimeout)
			completed := 0
			for _, n := range mc.completed {
				completed += n
			}
			t.Logf("%d moves started, %d completed, %d aborted, at most %d at once",
				mc.started, completed, mc.aborted, mc.maxPresent)

			// Both limits hold in every case; each case makes sure that the
			// limit it is about had work to do.
			burst := moveBurst(tc.movesPerSecond)
			if tc.rateBinds {
				require.GreaterOrEqual(t, mc.started, 2*burst, "too few moves to test the rate")
			}
			require.LessOrEqual(t, mc.maxPresent, tc.maxConcurrentMoves, "moves in etcd at once")
			if tc.concurrencyBinds {
				require.GreaterOrEqual(t, mc.started, 3*tc.maxConcurrentMoves, "too few moves to test the bound")
				require.Equal(t, tc.maxConcurrentMoves, mc.maxPresent, "the bound was never reached")
			}
			require.NoError(t, checkRate(mc.starts, tc.movesPerSecond, burst))
		})
	}
}

// moveBurst is the limiter's burst as newTerm configures it: one second's
// worth of moves (at least one).
func moveBurst(movesPerSecond float64) int {
	return max(1, int(math.Ceil(movesPerSecond)))
}

// rateSlack absorbs the difference between the limiter's clock reading
// and the start time written into the move (read just after it).
const rateSlack = 50 * time.Millisecond

// checkRate checks start times against a token bucket of rate perSecond
// and size burst: any window [s_i, s_j] holds at most burst + rate×(s_j−s_i)
// starts. With the whole run as the window this says n moves take at least
// (n−burst)/rate seconds.
func checkRate(starts []time.Time, perSecond float64, burst int) error {
	s := slices.Clone(starts)
	slices.SortFunc(s, func(a, b time.Time) int { return a.Compare(b) })
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			window := s[j].Sub(s[i]) + rateSlack
			if allowed := float64(burst) + perSecond*window.Seconds(); float64(j-i+1) > allowed {
				return fmt.Errorf("%d moves started within %s (from move %d on), the rate allows %.1f (%g/s, burst %d)",
					j-i+1, s[j].Sub(s[i]), i+1, allowed, perSecond, burst)
			}
		}
	}
	return nil
}

func TestCheckRate(t *testing.T) {
	at := func(ms ...int) []time.Time {
		base := time.Unix(1000, 0)
		var out []time.Time
		for _, m := range ms {
			out = append(out, base.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		starts    []time.Time
		perSecond float64
		burst     int
		ok        bool
	}{
		{name: "burst then paced", starts: at(0, 0, 0, 200, 400, 600), perSecond: 5, burst: 3, ok: true},
		{name: "unordered", starts: at(600, 0, 400, 0, 200, 0), perSecond: 5, burst: 3, ok: true},
		{name: "burst exceeded", starts: at(0, 0, 0, 0), perSecond: 5, burst: 3},
		{name: "too fast later", starts: at(0, 1000, 1010, 1020, 1030), perSecond: 5, burst: 3},
		{name: "refilled after a pause", starts: at(0, 0, 0, 2000, 2000, 2000), perSecond: 5, burst: 3, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRate(tc.starts, tc.perSecond, tc.burst)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}
