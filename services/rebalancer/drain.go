package rebalancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

var (
	// ErrUnknownScraper is returned by Drain for a scraper that is not a
	// live member.
	ErrUnknownScraper = errors.New("rebalancer: unknown scraper")
	// ErrInvalidScraper is returned for an empty scraper ID or one with a
	// "/" (it would name another key).
	ErrInvalidScraper = errors.New("rebalancer: invalid scraper id")
)

func checkScraperID(id string) error {
	if id == "" || strings.Contains(id, "/") {
		return ErrInvalidScraper
	}
	return nil
}

// Drain marks are kept at <prefix>drain/<scraper-id> without a lease, so that
// they survive rebalancer restarts and any leader sees them. The leader
// deletes the mark of a scraper that is no longer a member: draining ends
// when the scraper leaves (or on Undrain).

// DrainPrefix is the prefix of drain marks: "<prefix>drain/"
// ([leases.Keyspace.Drains], where scrapers watch them too).
func DrainPrefix(ks leases.Keyspace) string { return ks.Drains() }

// DrainKey is the drain mark of scraper ([leases.Keyspace.Drain]).
func DrainKey(ks leases.Keyspace, scraper string) string { return ks.Drain(scraper) }

// drainMark is the value of a drain mark.
type drainMark struct {
	Scraper   string    `json:"scraper"`
	Requested time.Time `json:"requested"`
	By        string    `json:"by"`
}

// Drain marks scraper for draining: the leader moves every target off it and
// no target onto it, until it leaves or Undrain is called. Any rebalancer
// (leader or not) may be asked; the mark is in etcd.
func (r *Rebalancer) Drain(ctx context.Context, scraper string) error {
	if err := checkScraperID(scraper); err != nil {
		return fmt.Errorf("drain %q: %w", scraper, err)
	}
	v, err := json.Marshal(drainMark{Scraper: scraper, Requested: time.Now().UTC(), By: r.cfg.ID})
	if err != nil {
		return fmt.Errorf("drain %s: %w", scraper, err)
	}
	// Only a live member can be drained, checked in the same transaction:
	// a mark for a scraper that is gone would be cleaned up at once anyway,
	// and the caller most likely mistyped the ID.
	member := r.cfg.Keyspace.Member(scraper)
	resp, err := r.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(member), ">", 0)).
		Then(clientv3.OpPut(DrainKey(r.cfg.Keyspace, scraper), string(v))).
		Commit()
	if err != nil {
		return fmt.Errorf("drain %s: %w", scraper, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("drain %s: %w", scraper, ErrUnknownScraper)
	}
	r.logger.Info("scraper marked for draining", "scraper", scraper)
	return nil
}

// Undrain removes scraper's drain mark. Targets are not moved back
// explicitly: the scraper is empty, so the next evaluation finds the cluster
// out of balance and fills it. Undraining a scraper that is not drained is
// not an error.
func (r *Rebalancer) Undrain(ctx context.Context, scraper string) error {
	if err := checkScraperID(scraper); err != nil {
		return fmt.Errorf("undrain %q: %w", scraper, err)
	}
	if _, err := r.etcd.Delete(ctx, DrainKey(r.cfg.Keyspace, scraper)); err != nil {
		return fmt.Errorf("undrain %s: %w", scraper, err)
	}
	r.logger.Info("scraper no longer draining", "scraper", scraper)
	return nil
}

// listDrains returns the scrapers marked for draining.
func listDrains(ctx context.Context, cli *clientv3.Client, ks leases.Keyspace) (map[string]bool, error) {
	prefix := DrainPrefix(ks)
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list drains: %w", err)
	}
	out := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = true
	}
	return out, nil
}

// forgetDrain deletes scraper's mark if it is not a member, in one
// transaction so that a scraper that re-registers meanwhile stays drained.
func forgetDrain(ctx context.Context, cli *clientv3.Client, ks leases.Keyspace, scraper string) (bool, error) {
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ks.Member(scraper)), "=", 0)).
		Then(clientv3.OpDelete(DrainKey(ks, scraper))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("forget drain of %s: %w", scraper, err)
	}
	return resp.Succeeded, nil
}
