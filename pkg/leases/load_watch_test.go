package leases

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestLoadWatch(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	sa := te.session(t, SessionConfig{}, nil)
	sb := te.session(t, SessionConfig{}, nil)

	// The watch gets a client of its own whose watches the compaction step
	// can hold back and break.
	cli := te.client(t)
	gw := &gatedWatcher{Watcher: cli.Watcher}
	cli.Watcher = gw
	reg := prometheus.NewRegistry()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := WatchLoads(wctx, cli, ks, nil, reg)
	m := newLoadWatchMetrics(reg) // the registered counters

	put := func(t *testing.T, s *Session, scraper string, targets int, seriesOf func(i int) int64) {
		t.Helper()
		l := Load{Scraper: scraper, Targets: targets, PerTarget: map[string]TargetLoad{}}
		for i := range targets {
			l.PerTarget[fmt.Sprintf("%s-%05d", scraper, i)] = TargetLoad{Series: seriesOf(i)}
			l.Series += seriesOf(i)
		}
		require.NoError(t, PutLoad(ctx, s, ks, l))
	}
	plus := func(n int64) func(int) int64 { return func(i int) int64 { return int64(i) + n } }
	var all int        // bytes under load/ before "one chunk changes"
	var before float64 // bytes the watch had read then

	for _, step := range []struct {
		name string
		do   func(t *testing.T)
		// check looks at what ListLoads returns after the step.
		check func(t *testing.T, want map[string]Load)
		// after, if set, runs once the watch has caught up.
		after func(t *testing.T)
	}{
		{
			name: "first reports",
			do: func(t *testing.T) {
				put(t, sa, "a", 4500, plus(1))
				put(t, sb, "b", 10, plus(1))
			},
			check: func(t *testing.T, want map[string]Load) {
				require.Equal(t, 3, want["a"].Chunks)
				require.Len(t, want["b"].PerTarget, 10)
			},
		},
		{
			name: "one chunk changes",
			do: func(t *testing.T) {
				all, before = readBytes(t, te.cli, ks), testutil.ToFloat64(m.bytes)
				put(t, sa, "a", 4500, func(i int) int64 {
					if i == 7 {
						return 1000
					}
					return int64(i) + 1
				})
			},
			check: func(t *testing.T, want map[string]Load) {
				require.Equal(t, int64(1000), want["a"].PerTarget["a-00007"].Series)
			},
			after: func(t *testing.T) {
				// The watch read a's totals and one chunk, not every chunk.
				read := testutil.ToFloat64(m.bytes) - before
				require.Less(t, read, float64(all)/2, "read %v bytes of %d under load/", read, all)
			},
		},
		{
			name: "chunk count shrinks",
			do:   func(t *testing.T) { put(t, sa, "a", 10, plus(2)) },
			check: func(t *testing.T, want map[string]Load) {
				require.Equal(t, 1, want["a"].Chunks)
				require.Len(t, want["a"].PerTarget, 10)
			},
		},
		{
			name: "chunk count grows",
			do:   func(t *testing.T) { put(t, sa, "a", 2500, plus(3)) },
			check: func(t *testing.T, want map[string]Load) {
				require.Equal(t, 2, want["a"].Chunks)
			},
		},
		{
			name: "report without targets",
			do:   func(t *testing.T) { put(t, sb, "b", 0, plus(0)) },
			check: func(t *testing.T, want map[string]Load) {
				require.Equal(t, 0, want["b"].Chunks)
				require.Nil(t, want["b"].PerTarget)
			},
		},
		{
			name: "lease revoked",
			do: func(t *testing.T) {
				put(t, sb, "b", 30, plus(4))
				require.NoError(t, sb.Close())
			},
			check: func(t *testing.T, want map[string]Load) {
				require.NotContains(t, want, "b", "the report goes with the lease")
				require.Contains(t, want, "a")
			},
		},
		{
			name: "compaction",
			do: func(t *testing.T) {
				// Break the watch and hold the next one back, so that the
				// watch resumes from a revision compacted meanwhile and must
				// list again.
				waiting, release := gw.holdNext()
				gw.breakWatch()
				select {
				case <-waiting:
				case <-ctx.Done():
					t.Fatal("watch not restarted")
				}
				put(t, sa, "a", 4500, plus(5))
				sc := te.session(t, SessionConfig{}, nil)
				put(t, sc, "c", 5, plus(5))
				resp, err := te.cli.Get(ctx, "compact")
				require.NoError(t, err)
				_, err = te.cli.Compact(ctx, resp.Header.Revision)
				require.NoError(t, err)
				release()
			},
			check: func(t *testing.T, want map[string]Load) {
				require.Len(t, want["a"].PerTarget, 4500)
				require.Contains(t, want, "c")
			},
			after: func(t *testing.T) {
				require.Positive(t, gw.compacted.Load(), "the held watch was compacted")
			},
		},
	} {
		t.Run(step.name, func(t *testing.T) {
			step.do(t)
			want, err := ListLoads(ctx, te.cli, ks)
			require.NoError(t, err)
			step.check(t, want)
			waitLoads(t, w, want)
			if step.after != nil {
				step.after(t)
			}
		})
	}

	// The caller owns what Loads returns.
	got, err := w.Loads(ctx)
	require.NoError(t, err)
	delete(got["a"].PerTarget, "a-00000")
	again, err := w.Loads(ctx)
	require.NoError(t, err)
	require.Contains(t, again["a"].PerTarget, "a-00000")

	cancel()
	waitClosed(t, w.Done(), 10*time.Second, "load watch done")
	_, err = w.Loads(ctx)
	require.ErrorIs(t, err, ErrLoadWatchStopped)
}

// TestLoadWatchWaitsForListing checks that Loads waits for the first
// listing, bounded by its context.
func TestLoadWatchWaitsForListing(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ctx := testCtx(t)
	cli := te.client(t)
	gw := &gatedWatcher{Watcher: cli.Watcher}
	cli.Watcher = gw
	// The first listing is handed over only once its watch is set up.
	waiting, release := gw.holdNext()
	wctx, cancel := context.WithCancel(ctx)
	w := WatchLoads(wctx, cli, Keyspace{}, nil, nil)
	defer func() {
		cancel()
		<-w.Done()
	}()
	select {
	case <-waiting:
	case <-ctx.Done():
		t.Fatal("watch not started")
	}

	short, shortCancel := context.WithCancel(ctx)
	shortCancel()
	_, err := w.Loads(short)
	require.ErrorIs(t, err, context.Canceled)

	release()
	got, err := w.Loads(ctx)
	require.NoError(t, err)
	require.Empty(t, got)
}

// waitLoads waits until w's reports equal want, woken by w's changes.
func waitLoads(t *testing.T, w *LoadWatch, want map[string]Load) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		changed := w.updated()
		got, err := w.Loads(testCtx(t))
		require.NoError(t, err)
		if reflect.DeepEqual(got, want) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			require.Equal(t, want, got, "load watch did not catch up with ListLoads")
			return
		}
	}
}

// readBytes is the size of every key and value under load/.
func readBytes(t *testing.T, cli *clientv3.Client, ks Keyspace) int {
	t.Helper()
	resp, err := cli.Get(testCtx(t), ks.Loads(), clientv3.WithPrefix())
	require.NoError(t, err)
	n := 0
	for _, kv := range resp.Kvs {
		n += len(kv.Key) + len(kv.Value)
	}
	return n
}

// gatedWatcher lets a test hold back the next Watch call and break the
// current watch, to make a LoadWatch resume from a compacted revision.
type gatedWatcher struct {
	clientv3.Watcher
	compacted atomic.Int64 // responses saying the revision was compacted

	mu      sync.Mutex
	gate    chan struct{} // non-nil: the next Watch waits for it to close
	waiting chan struct{} // closed when that Watch is waiting
	brk     chan struct{} // closed to break the latest watch
}

// holdNext holds the next Watch until release is called; waiting closes
// when it is held.
func (g *gatedWatcher) holdNext() (waiting <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate, g.waiting = make(chan struct{}), make(chan struct{})
	gate := g.gate
	return g.waiting, func() { close(gate) }
}

// breakWatch closes the latest watch's channel, as etcd does when a watch
// fails.
func (g *gatedWatcher) breakWatch() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.brk)
}

func (g *gatedWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	g.mu.Lock()
	gate, waiting := g.gate, g.waiting
	g.gate = nil
	brk := make(chan struct{})
	g.brk = brk
	g.mu.Unlock()
	if gate != nil {
		close(waiting)
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	in := g.Watcher.Watch(ctx, key, opts...)
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for {
			var resp clientv3.WatchResponse
			var ok bool
			select {
			case <-brk:
				return
			case resp, ok = <-in:
				if !ok {
					return
				}
			}
			if resp.CompactRevision != 0 {
				g.compacted.Add(1)
			}
			select {
			case out <- resp:
			case <-brk:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
