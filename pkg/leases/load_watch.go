package leases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLoadWatchStopped is returned by [LoadWatch.Loads] once the watch's
// context has ended: its reports would only get staler.
var ErrLoadWatchStopped = errors.New("leases: load watch stopped")

// LoadWatch keeps the live load reports by following load/: it lists the
// prefix once and then applies the watched puts and deletes, so that each
// chunk is read from etcd once and again only when a scraper rewrites it.
// [ListLoads] reads every chunk of every scraper each time (18 MB at 800k
// targets, see docs/benchmarks.md), although PutLoad rarely rewrites a
// chunk; a reader that needs the per-target series every few seconds, the
// rebalancer leader, follows them instead.
//
// The watch is restarted from a fresh listing after a compaction or any
// watch error, as [WatchMembers]'s is. Until a restarted listing succeeds,
// [LoadWatch.Loads] returns the reports as last seen: reports are seconds
// old when read anyway, and an etcd that cannot be listed would fail
// ListLoads too.
type LoadWatch struct {
	ready chan struct{} // closed once the first listing is in
	done  chan struct{} // closed when the watch has stopped

	mu sync.Mutex
	// keys is the last set of decoded keys under load/, by the key after
	// the prefix. The map and its values are never modified: the watch
	// hands over a new map on every change.
	keys map[string]loadKey
	// merged caches each scraper's chunks merged into one map, so that an
	// evaluation only re-merges the scrapers whose chunks changed. Private:
	// Loads hands out copies.
	merged map[string]mergedChunks
	// changed is closed and replaced whenever keys changes (tests and
	// benchmarks wait on it).
	changed chan struct{}

	metrics *loadWatchMetrics
}

// loadKey is one decoded key under load/: a scraper's totals or one chunk
// of its per-target figures.
type loadKey struct {
	// rev is the key's ModRevision. It names the version of the key, so
	// comparing two sets of keys (after each watch response) need not
	// compare chunk contents.
	rev     int64
	scraper string
	totals  *Load                 // nil for a chunk
	chunk   map[string]TargetLoad // a chunk's figures by target
}

// mergedChunks is a scraper's chunks merged, and the versions of the chunk
// keys they were merged from.
type mergedChunks struct {
	revs    map[string]int64
	targets map[string]TargetLoad
}

// WatchLoads starts following the load reports under ks until ctx ends;
// [LoadWatch.Done] closes once it has stopped. logger and reg may be nil.
func WatchLoads(ctx context.Context, cli *clientv3.Client, ks Keyspace, logger *slog.Logger, reg prometheus.Registerer) *LoadWatch {
	w := &LoadWatch{
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		metrics: newLoadWatchMetrics(reg),
	}
	prefix := ks.Loads()
	ch := watchKeys(ctx, cli, keyWatch[loadKey, map[string]loadKey]{
		prefix: prefix,
		what:   "load report",
		decode: func(kv *mvccpb.KeyValue) (loadKey, error) { return w.decode(prefix, kv) },
		equal:  func(a, b loadKey) bool { return a.rev == b.rev },
		// The values are never modified, so a shallow copy is a snapshot:
		// O(keys), about one per 2000 targets.
		view: maps.Clone[map[string]loadKey],
	}, logger)
	go func() {
		defer close(w.done)
		first := true
		for keys := range ch {
			w.mu.Lock()
			w.keys = keys
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
			if first {
				close(w.ready)
				first = false
			}
		}
	}()
	return w
}

// decode reads one key under load/ as ListLoads does: a key with a "/"
// after the scraper ID is a chunk; anything that does not decode is left
// out.
func (w *LoadWatch) decode(prefix string, kv *mvccpb.KeyValue) (loadKey, error) {
	w.metrics.keys.Inc()
	w.metrics.bytes.Add(float64(len(kv.Key) + len(kv.Value)))
	rest := strings.TrimPrefix(string(kv.Key), prefix)
	if scraper, _, isChunk := strings.Cut(rest, "/"); isChunk {
		c, err := decodeChunk(kv.Value)
		if err != nil {
			return loadKey{}, fmt.Errorf("decode load chunk %s: %w", kv.Key, err)
		}
		return loadKey{rev: kv.ModRevision, scraper: scraper, chunk: c}, nil
	}
	var l Load
	if err := json.Unmarshal(kv.Value, &l); err != nil {
		return loadKey{}, fmt.Errorf("decode load %s: %w", kv.Key, err)
	}
	l.Scraper = rest
	return loadKey{rev: kv.ModRevision, scraper: rest, totals: &l}, nil
}

// Loads returns the live load reports by scraper ID with their per-target
// figures, as [ListLoads] would have read them at the revision the watch
// has reached. The map and every PerTarget map in it are the caller's.
// Before the first listing is in, Loads waits for it or for ctx to end;
// once the watch has stopped, it returns [ErrLoadWatchStopped].
func (w *LoadWatch) Loads(ctx context.Context) (map[string]Load, error) {
	select {
	case <-w.done:
		return nil, ErrLoadWatchStopped
	default:
	}
	select {
	case <-w.ready:
	case <-w.done:
		return nil, ErrLoadWatchStopped
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for load reports: %w", ctx.Err())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]Load{}
	chunks := map[string][]string{} // chunk keys by scraper
	for id, k := range w.keys {
		if k.totals != nil {
			out[k.scraper] = *k.totals
		} else {
			chunks[k.scraper] = append(chunks[k.scraper], id)
		}
	}
	merged := make(map[string]mergedChunks, len(out))
	for id, l := range out {
		m := w.mergeChunks(id, chunks[id])
		merged[id] = m
		l.PerTarget = maps.Clone(m.targets)
		out[id] = l
	}
	// Scrapers without totals (ListLoads leaves them out too) or gone drop
	// out of the cache here.
	w.merged = merged
	return out, nil
}

// mergeChunks returns scraper's chunks (keys ids) merged, from the cache if
// none of them changed. The caller holds w.mu.
func (w *LoadWatch) mergeChunks(scraper string, ids []string) mergedChunks {
	if c, ok := w.merged[scraper]; ok && len(c.revs) == len(ids) &&
		!slices.ContainsFunc(ids, func(id string) bool { return c.revs[id] != w.keys[id].rev }) {
		return c
	}
	if len(ids) == 0 {
		return mergedChunks{} // nil PerTarget, as ListLoads has for no chunks
	}
	// In key order, as ListLoads reads them: a target in two chunks (only
	// while a scraper's chunk count changes) gets the same figures.
	slices.Sort(ids)
	m := mergedChunks{revs: make(map[string]int64, len(ids))}
	n := 0
	for _, id := range ids {
		n += len(w.keys[id].chunk)
	}
	m.targets = make(map[string]TargetLoad, n)
	for _, id := range ids {
		k := w.keys[id]
		m.revs[id] = k.rev
		maps.Copy(m.targets, k.chunk)
	}
	return m
}

// Done is closed once the watch has stopped, after its context ended.
func (w *LoadWatch) Done() <-chan struct{} { return w.done }

// updated returns a channel closed at the next change of the reports.
func (w *LoadWatch) updated() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}
