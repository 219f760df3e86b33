package leases

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Load is a scraper's load report. The totals live at load/<scraper>, the
// per-target series in chunks at load/<scraper>/<n>, all on the scraper's
// session lease so that a dead scraper's report goes with it.
//
// Why chunks: one value with every target's load grows to etcd's 1.5 MiB
// request limit at about 13k targets, and rewriting it every few seconds
// costs etcd bandwidth and history in proportion to the targets. Per-target
// series rarely change, so PutLoad rewrites only the chunks whose content
// changed; the small totals key is what changes every report.
type Load struct {
	Scraper                string    `json:"scraper"`
	Targets                int       `json:"targets"`
	Series                 int64     `json:"series"`
	SamplesPerSecond       float64   `json:"samples_per_second"`
	ScrapeSecondsPerSecond float64   `json:"scrape_seconds_per_second"`
	Updated                time.Time `json:"updated"`
	// Chunks is how many per-target chunks the report has (set by PutLoad).
	Chunks int `json:"chunks,omitempty"`
	// PerTarget holds each target's series. Only Series is stored: the
	// per-target scrape time and duration change every scrape and nothing
	// downstream needs them per target.
	PerTarget map[string]TargetLoad `json:"-"`
}

// TargetLoad is one target's share of a Load.
type TargetLoad struct {
	Series int64 `json:"series"`
	// ScrapeSeconds and LastScrape are for the reporting scraper's own use;
	// PutLoad does not store them.
	ScrapeSeconds float64   `json:"-"`
	LastScrape    time.Time `json:"-"`
}

// loadChunkTargets bounds a chunk to about 2000 targets (~60 KB).
const loadChunkTargets = 2000

func loadChunkKey(ks Keyspace, scraper string, n int) string {
	return ks.Load(scraper) + "/" + strconv.Itoa(n)
}

// PutLoad stores l on s's lease. A zero Updated is set to now. Chunks whose
// content is what this session last wrote are not written again.
func PutLoad(ctx context.Context, s *Session, ks Keyspace, l Load) error {
	if err := checkID("scraper", l.Scraper); err != nil {
		return fmt.Errorf("put load: %w", err)
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, err)
	}
	if l.Updated.IsZero() {
		l.Updated = time.Now()
	}
	n := (len(l.PerTarget) + loadChunkTargets - 1) / loadChunkTargets
	chunks := make([]map[string]int64, n)
	for i := range chunks {
		chunks[i] = make(map[string]int64, loadChunkTargets)
	}
	for t, tl := range l.PerTarget {
		h := fnv.New32a()
		h.Write([]byte(t))
		chunks[int(h.Sum32())%n][t] = tl.Series
	}
	l.Chunks = n

	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if s.loadWritten == nil {
		s.loadWritten = map[string]string{}
	}
	var ops []clientv3.Op
	written := map[string]string{}
	for i, c := range chunks {
		v, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("put load of %s: %w", l.Scraper, err)
		}
		key := loadChunkKey(ks, l.Scraper, i)
		written[key] = string(v)
		if s.loadWritten[key] != string(v) {
			ops = append(ops, clientv3.OpPut(key, string(v), clientv3.WithLease(s.id)))
		}
	}
	for key := range s.loadWritten {
		if _, ok := written[key]; !ok && strings.HasPrefix(key, ks.Load(l.Scraper)+"/") {
			ops = append(ops, clientv3.OpDelete(key))
		}
	}
	// Chunks first, one request each (a txn would share the request size
	// limit), then the totals that say how many chunks to read.
	for _, op := range ops {
		if _, err := s.cli.Do(ctx, op); err != nil {
			s.loadWritten = nil // unknown state: rewrite everything next time
			return fmt.Errorf("put load of %s: %w", l.Scraper, leaseErr(err))
		}
	}
	s.loadWritten = written
	v, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, err)
	}
	if _, err := s.cli.Put(ctx, ks.Load(l.Scraper), string(v), clientv3.WithLease(s.id)); err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, leaseErr(err))
	}
	return nil
}

// ListLoads returns the live load reports by scraper ID, with their
// per-target series. Entries that do not decode are skipped. It reads every
// chunk: a reader that needs the series repeatedly follows them with
// [WatchLoads] instead.
func ListLoads(ctx context.Context, cli *clientv3.Client, ks Keyspace) (map[string]Load, error) {
	out := map[string]Load{}
	per := map[string]map[string]TargetLoad{}
	_, err := scanPrefix(ctx, cli, ks.Loads(), func() { clear(out); clear(per) }, func(kv *mvccpb.KeyValue) error {
		rest := strings.TrimPrefix(string(kv.Key), ks.Loads())
		if scraper, _, isChunk := strings.Cut(rest, "/"); isChunk {
			var c map[string]int64
			if err := json.Unmarshal(kv.Value, &c); err != nil {
				return nil
			}
			m := per[scraper]
			if m == nil {
				m = make(map[string]TargetLoad, len(c))
				per[scraper] = m
			}
			for t, series := range c {
				m[t] = TargetLoad{Series: series}
			}
			return nil
		}
		var l Load
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return nil
		}
		l.Scraper = rest
		out[l.Scraper] = l
		return nil
	})
	if err != nil {
		return nil, err
	}
	for id, l := range out {
		l.PerTarget = per[id]
		out[id] = l
	}
	return out, nil
}

// LoadSummaries returns the live load reports without their per-target
// series: O(scrapers) to read, for whoever only needs the totals.
func LoadSummaries(ctx context.Context, cli *clientv3.Client, ks Keyspace) (map[string]Load, error) {
	out := map[string]Load{}
	_, err := scanPrefix(ctx, cli, ks.Loads(), func() { clear(out) }, func(kv *mvccpb.KeyValue) error {
		rest := strings.TrimPrefix(string(kv.Key), ks.Loads())
		if strings.Contains(rest, "/") {
			return nil
		}
		var l Load
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return nil
		}
		l.Scraper = rest
		out[rest] = l
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
