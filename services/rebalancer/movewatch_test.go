package rebalancer

import (
	"fmt"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/testcluster"
)

// watchMoveKeys starts recording the test keyspace's claims and moves from
// etcd's own history: the ground truth the rebalancer's limits and metrics
// are checked against, independent of its own bookkeeping. The test's
// cleanup stops it.
func (c *testCluster) watchMoveKeys() *testcluster.History {
	c.t.Helper()
	return testcluster.WatchHistory(c.t, c.client(), c.ks)
}

// moveCounts is what a history saw of the moves started after it began,
// summed up.
type moveCounts struct {
	// started counts every move written; maxPresent is the most move keys
	// in etcd at any revision.
	started, maxPresent int
	// completed counts moves ended by a takeover (the claim put and the
	// move deleted in one revision), by reason; aborted those deleted
	// otherwise.
	completed map[string]int
	aborted   int
	// starts are the moves' start times in the order they were written.
	starts []time.Time
}

// countMoves sums up what h has seen so far (call h.Sync first to include
// every change made before); moveTimeout is the rebalancer's, which gives
// each move's start time as its deadline minus the timeout (the deadline is
// set from the same clock reading as the start).
func countMoves(t *testing.T, h *testcluster.History, moveTimeout time.Duration) moveCounts {
	t.Helper()
	changes := h.Changes(t)
	claimPuts := map[string]bool{} // "target@revision" of every claim written
	for _, ch := range changes {
		if ch.Kind == testcluster.ClaimPut {
			claimPuts[fmt.Sprintf("%s@%d", ch.Target, ch.Rev)] = true
		}
	}
	mc := moveCounts{completed: map[string]int{}}
	present := map[string]bool{} // move keys in etcd after each change
	for _, ch := range changes {
		switch ch.Kind {
		case testcluster.MoveStarted:
			present[ch.Target] = true
			mc.started++
			mc.maxPresent = max(mc.maxPresent, len(present))
			mc.starts = append(mc.starts, ch.Move.Deadline.Add(-moveTimeout))
		case testcluster.MoveEnded:
			if !present[ch.Target] {
				continue // started before the history began
			}
			delete(present, ch.Target)
			if claimPuts[fmt.Sprintf("%s@%d", ch.Target, ch.Rev)] {
				mc.completed[ch.Move.Reason]++
			} else {
				mc.aborted++
			}
		}
	}
	return mc
}
