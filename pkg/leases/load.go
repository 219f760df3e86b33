package leases

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Load is a scraper's load report, stored at load/<scraper> on its session
// lease so that a dead scraper's report goes with it.
type Load struct {
	Scraper                string                `json:"scraper"`
	Targets                int                   `json:"targets"`
	Series                 int64                 `json:"series"`
	SamplesPerSecond       float64               `json:"samples_per_second"`
	ScrapeSecondsPerSecond float64               `json:"scrape_seconds_per_second"`
	PerTarget              map[string]TargetLoad `json:"per_target,omitempty"`
	Updated                time.Time             `json:"updated"`
	// LastScrape is a convenience view of PerTarget[t].LastScrape: PutLoad
	// stores it inside PerTarget and ListLoads fills it from there.
	LastScrape map[string]time.Time `json:"-"`
}

// TargetLoad is one target's share of a Load.
type TargetLoad struct {
	Series        int64     `json:"series"`
	ScrapeSeconds float64   `json:"scrape_seconds"`
	LastScrape    time.Time `json:"last_scrape"`
}

// PutLoad stores l at load/<l.Scraper> on s's lease. A zero Updated is set
// to now.
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
	if len(l.LastScrape) > 0 {
		per := make(map[string]TargetLoad, max(len(l.PerTarget), len(l.LastScrape)))
		for t, tl := range l.PerTarget {
			per[t] = tl
		}
		for t, ts := range l.LastScrape {
			tl := per[t]
			if tl.LastScrape.IsZero() {
				tl.LastScrape = ts
				per[t] = tl
			}
		}
		l.PerTarget = per
	}
	v, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, err)
	}
	if _, err := s.cli.Put(ctx, ks.Load(l.Scraper), string(v), clientv3.WithLease(s.id)); err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, leaseErr(err))
	}
	return nil
}

// ListLoads returns the live load reports by scraper ID. Entries that do
// not decode are skipped.
func ListLoads(ctx context.Context, cli *clientv3.Client, ks Keyspace) (map[string]Load, error) {
	out := map[string]Load{}
	_, err := scanPrefix(ctx, cli, ks.Loads(), func() { clear(out) }, func(kv *mvccpb.KeyValue) error {
		var l Load
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return nil
		}
		l.Scraper = strings.TrimPrefix(string(kv.Key), ks.Loads())
		for t, tl := range l.PerTarget {
			if !tl.LastScrape.IsZero() {
				if l.LastScrape == nil {
					l.LastScrape = make(map[string]time.Time, len(l.PerTarget))
				}
				l.LastScrape[t] = tl.LastScrape
			}
		}
		out[l.Scraper] = l
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
