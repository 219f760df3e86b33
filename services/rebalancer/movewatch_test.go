package rebalancer

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

// moveWatch records, from etcd's own history, what happened to moves/:
// every move written and how many were in etcd at once, and which moves
// ended by the destination's takeover (the claim put and the move deleted
// in one revision). It is the ground truth the rebalancer's limits and
// metrics are checked against, independent of the rebalancer's own
// bookkeeping.
type moveWatch struct {
	c      *testCluster
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// present: the move keys in etcd after the last event applied.
	present map[string]leases.Move
	// maxPresent is the most move keys in etcd at any revision.
	maxPresent int
	// started: every move written, in revision order.
	started []leases.Move
	// claimPuts: "target@revision" of every claim written.
	claimPuts map[string]bool
	// ended: every move deleted, with its revision.
	ended []endedMove
	// synced: the sync markers seen.
	synced map[string]bool
	err    error
}

type endedMove struct {
	m   leases.Move
	rev int64
}

// syncPrefix holds the markers moveWatch.sync writes under the test
// keyspace; nothing else reads that prefix.
const syncPrefix = "movewatch-sync/"

// watchMoveKeys starts following the test keyspace from its current
// revision on; the test's cleanup stops it.
func (c *testCluster) watchMoveKeys() *moveWatch {
	c.t.Helper()
	cli := c.client()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cli.Get(ctx, c.ks.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(c.t, err)
	w := &moveWatch{
		c: c, cli: cli, cancel: cancel, done: make(chan struct{}),
		present: map[string]leases.Move{}, claimPuts: map[string]bool{}, synced: map[string]bool{},
	}
	wch := cli.Watch(ctx, c.ks.Prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		defer close(w.done)
		for resp := range wch {
			if err := resp.Err(); err != nil {
				w.fail(fmt.Errorf("watch: %w", err))
				continue
			}
			w.apply(resp.Events)
		}
	}()
	c.t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

func (w *moveWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil && !strings.Contains(err.Error(), "context canceled") {
		w.err = err
	}
}

// apply applies events in revision order (the order etcd delivers them).
func (w *moveWatch) apply(evs []*clientv3.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		switch {
		case strings.HasPrefix(key, w.c.ks.Moves()):
			target := strings.TrimPrefix(key, w.c.ks.Moves())
			if ev.Type == clientv3.EventTypeDelete {
				if m, ok := w.present[target]; ok {
					w.ended = append(w.ended, endedMove{m: m, rev: ev.Kv.ModRevision})
					delete(w.present, target)
				}
				continue
			}
			var m leases.Move
			if err := json.Unmarshal(ev.Kv.Value, &m); err != nil {
				w.err = fmt.Errorf("decode move %s: %w", key, err)
				continue
			}
			m.Target = target
			w.present[target] = m
			w.started = append(w.started, m)
			w.maxPresent = max(w.maxPresent, len(w.present))
		case strings.HasPrefix(key, w.c.ks.Claims()) && ev.Type == clientv3.EventTypePut:
			target := strings.TrimPrefix(key, w.c.ks.Claims())
			w.claimPuts[fmt.Sprintf("%s@%d", target, ev.Kv.ModRevision)] = true
		case strings.HasPrefix(key, w.c.ks.Prefix+syncPrefix):
			w.synced[key] = true
		}
	}
}

// sync returns once every change made to etcd before the call has been
// applied: it writes a marker and waits for the watch to deliver it
// (a watch delivers events in revision order).
func (w *moveWatch) sync(t *testing.T) {
	t.Helper()
	key := fmt.Sprintf("%s%s%d", w.c.ks.Prefix, syncPrefix, time.Now().UnixNano())
	_, err := w.cli.Put(context.Background(), key, "")
	require.NoError(t, err)
	waitFor(t, 10*time.Second, "move watch synced", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.err != nil {
			return w.err
		}
		if !w.synced[key] {
			return fmt.Errorf("marker %s not seen yet", key)
		}
		return nil
	})
}

// moveCounts is what moveWatch saw, summed up.
type moveCounts struct {
	started, maxPresent int
	// completed counts moves ended by a takeover, by reason; aborted those
	// deleted otherwise.
	completed map[string]int
	aborted   int
	// starts are the moves' start times in the order they were written.
	starts []time.Time
}

// counts sums up what was seen; moveTimeout is the rebalancer's, which
// gives each move's start time as its deadline minus the timeout (the
// deadline is set from the same clock reading as the start).
func (w *moveWatch) counts(moveTimeout time.Duration) moveCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	mc := moveCounts{started: len(w.started), maxPresent: w.maxPresent, completed: map[string]int{}}
	for _, e := range w.ended {
		if w.claimPuts[fmt.Sprintf("%s@%d", e.m.Target, e.rev)] {
			mc.completed[e.m.Reason]++
		} else {
			mc.aborted++
		}
	}
	for _, m := range w.started {
		mc.starts = append(mc.starts, m.Deadline.Add(-moveTimeout))
	}
	return mc
}
