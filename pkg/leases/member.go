package leases

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member kinds.
const (
	KindScraper   = "scraper"
	KindCollector = "collector"
)

// Member is a live process that can own targets, stored at members/<id> on
// the process's session lease: it disappears when the process does.
type Member struct {
	ID      string    `json:"id"`
	Addr    string    `json:"addr"`
	Zone    string    `json:"zone,omitempty"`
	Weight  float64   `json:"weight"`
	Started time.Time `json:"started"`
	Version string    `json:"version"`
	// Kind is KindScraper (also when empty) or KindCollector (an OTel
	// collector polling the TA-compatible API).
	Kind string `json:"kind,omitempty"`
}

func (m Member) equal(o Member) bool {
	return m.ID == o.ID && m.Addr == o.Addr && m.Zone == o.Zone && m.Weight == o.Weight &&
		m.Started.Equal(o.Started) && m.Version == o.Version && m.Kind == o.Kind
}

// Register puts members/<m.ID> on the session's lease. Registering again
// overwrites the entry.
func Register(ctx context.Context, s *Session, ks Keyspace, m Member) error {
	if err := checkID("member", m.ID); err != nil {
		return err
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("register member %s: %w", m.ID, err)
	}
	v, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("register member %s: %w", m.ID, err)
	}
	if _, err := s.cli.Put(ctx, ks.Member(m.ID), string(v), clientv3.WithLease(s.id)); err != nil {
		return fmt.Errorf("register member %s: %w", m.ID, leaseErr(err))
	}
	return nil
}

// ListMembers returns the live members sorted by ID, and the revision read.
// Entries that do not decode are skipped.
func ListMembers(ctx context.Context, cli *clientv3.Client, ks Keyspace) ([]Member, int64, error) {
	var out []Member
	rev, err := scanPrefix(ctx, cli, ks.Members(), func() { out = out[:0] }, func(kv *mvccpb.KeyValue) error {
		if m, err := decodeMember(ks, kv); err == nil {
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	sortMembers(out)
	return out, rev, nil
}

func decodeMember(ks Keyspace, kv *mvccpb.KeyValue) (Member, error) {
	var m Member
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return Member{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	// The key is authoritative: a value naming another ID is not trusted.
	m.ID = strings.TrimPrefix(string(kv.Key), ks.Members())
	return m, nil
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
}

// WatchMembers sends the full live member set (sorted by ID) first and then
// after every change. A slow receiver gets the latest set, not every
// intermediate one, and an unchanged set is not sent again. The watch is
// restarted from a fresh listing after compaction, cancellation or loss of
// the etcd leader, so the sets stay complete. The channel is closed when ctx
// ends.
func WatchMembers(ctx context.Context, cli *clientv3.Client, ks Keyspace, logger *slog.Logger) <-chan []Member {
	return watchKeys(ctx, cli, keyWatch[Member, []Member]{
		prefix: ks.Members(),
		what:   "member",
		decode: func(kv *mvccpb.KeyValue) (Member, error) { return decodeMember(ks, kv) },
		equal:  Member.equal,
		view: func(cur map[string]Member) []Member {
			out := make([]Member, 0, len(cur))
			for _, m := range cur {
				out = append(out, m)
			}
			sortMembers(out)
			return out
		},
	}, logger)
}

// keyWatch is what watchKeys follows: the keys under prefix, each decoded
// into a V and named by the rest of its key, and what the receiver gets of
// them.
type keyWatch[V, T any] struct {
	prefix string
	what   string                            // names a key's kind in logs
	decode func(*mvccpb.KeyValue) (V, error) // an error leaves the key out
	equal  func(a, b V) bool
	// view is what the receiver gets of the current set; it must not keep
	// the map, which changes after it returns.
	view func(map[string]V) T
}

// watchKeys sends kw.view of the keys under kw.prefix first and then after
// every change, as WatchMembers documents, until ctx ends; then it closes
// the channel.
func watchKeys[V, T any](ctx context.Context, cli *clientv3.Client, kw keyWatch[V, T], logger *slog.Logger) <-chan T {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	out := make(chan T)
	go func() {
		defer close(out)
		w := keyWatcher[V, T]{keyWatch: kw, cli: cli, logger: logger, out: out}
		w.run(ctx)
	}()
	return out
}

type keyWatcher[V, T any] struct {
	keyWatch[V, T]
	cli    *clientv3.Client
	logger *slog.Logger
	out    chan<- T

	sent map[string]V // last set the receiver got; nil before the first
}

func (w *keyWatcher[V, T]) run(ctx context.Context) {
	bo := newBackoff()
	for ctx.Err() == nil {
		err := w.listAndWatch(ctx, bo)
		if ctx.Err() != nil {
			return
		}
		w.logger.Warn(w.what+" watch restarting", "err", err)
		if !bo.wait(ctx) {
			return
		}
	}
}

// listAndWatch lists the keys, then follows changes from the revision
// listed until the watch fails, so that no change between the two is lost.
func (w *keyWatcher[V, T]) listAndWatch(ctx context.Context, bo *backoff) error {
	cur := map[string]V{}
	rev, err := scanPrefix(ctx, w.cli, w.prefix, func() { clear(cur) }, func(kv *mvccpb.KeyValue) error {
		w.put(cur, kv)
		return nil
	})
	if err != nil {
		return err // scanPrefix names the prefix
	}
	bo.reset()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))

	pending := w.changed(cur)
	for {
		var send chan<- T
		var snapshot T
		if pending {
			send, snapshot = w.out, w.view(cur)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case send <- snapshot:
			w.sent, pending = maps.Clone(cur), false
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch %ss: channel closed", w.what)
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch %ss: %w", w.what, err)
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(cur, w.id(ev.Kv))
					continue
				}
				w.put(cur, ev.Kv)
			}
			pending = w.changed(cur)
		}
	}
}

// put decodes kv into cur; a key that does not decode is left out (and
// dropped if an earlier version of it was in), and logged.
func (w *keyWatcher[V, T]) put(cur map[string]V, kv *mvccpb.KeyValue) {
	id := w.id(kv)
	v, err := w.decode(kv)
	if err != nil {
		w.logger.Warn("skipping undecodable "+w.what, "err", err)
		delete(cur, id)
		return
	}
	cur[id] = v
}

func (w *keyWatcher[V, T]) id(kv *mvccpb.KeyValue) string {
	return strings.TrimPrefix(string(kv.Key), w.prefix)
}

// changed says whether cur differs from what the receiver last got.
func (w *keyWatcher[V, T]) changed(cur map[string]V) bool {
	return w.sent == nil || !maps.EqualFunc(cur, w.sent, w.equal)
}

// backoff spaces out restarts of a failing watch: 100ms doubling to 5s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(b.d*2, 5*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%s id is empty", what)
	}
	return nil
}

// leaseErr maps etcd's "lease not found" (the lease expired or was revoked
// on the server) to ErrLeaseLost.
func leaseErr(err error) error {
	if isLeaseNotFound(err) {
		return fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return err
}
