package targetallocator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

// mirror keeps every claim and every move in memory, from a listing at one
// revision followed by watches of claims/ and moves/ from the next. The API
// answers "which targets does collector C own" from it and finds the unowned
// targets and the moves to its collectors in it. Unlike Claims.Watch it
// sees claim puts too: a claim taken over by another member is a put.
type mirror struct {
	cli      *clientv3.Client
	ks       leases.Keyspace
	logger   *slog.Logger
	onChange func()

	mu     sync.RWMutex
	claims map[string]leases.Claim
	moves  map[string]leases.Move
	// lastOwner is the owner of a target whose claim was deleted and not
	// yet taken again. Answers keep such a target with its last owner until
	// someone claims it: when a restarted API's predecessor's leases
	// expire, the claims vanish and are claimed again for the same
	// collectors a moment later, and a poll in between must not be told
	// to stop scraping (its next poll is 30 s away).
	lastOwner map[string]string
	synced    bool
	rev       int64  // highest claims/ revision applied
	gen       uint64 // bumped by every change
	revCh     chan struct{}
}

func newMirror(cli *clientv3.Client, ks leases.Keyspace, logger *slog.Logger, onChange func()) *mirror {
	return &mirror{
		cli: cli, ks: ks, logger: logger, onChange: onChange,
		claims:    map[string]leases.Claim{},
		moves:     map[string]leases.Move{},
		lastOwner: map[string]string{},
		revCh:     make(chan struct{}),
	}
}

var errCompacted = errors.New("watch revision compacted")

// run lists and watches until ctx ends, starting over from a fresh listing
// after any watch failure (compaction, lost leader, closed channel).
func (m *mirror) run(ctx context.Context) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		listed, err := m.listAndWatch(ctx)
		if ctx.Err() != nil {
			return
		}
		if listed {
			wait = 100 * time.Millisecond
		}
		m.logger.Warn("claims mirror restarting", "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func (m *mirror) listAndWatch(ctx context.Context) (bool, error) {
	claims, rev, err := leases.ListClaims(ctx, m.cli, m.ks)
	if err != nil {
		return false, err
	}
	resp, err := m.cli.Get(ctx, m.ks.Moves(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return false, fmt.Errorf("list moves at revision %d: %w", rev, err)
	}
	moves := make(map[string]leases.Move, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if mv, err := m.decodeMove(kv); err == nil {
			moves[mv.Target] = mv
		}
	}
	m.replace(claims, moves, rev)

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	cw := m.cli.Watch(wctx, m.ks.Claims(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	mw := m.cli.Watch(wctx, m.ks.Moves(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		var resp clientv3.WatchResponse
		var ok, isMove bool
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case resp, ok = <-cw:
		case resp, ok = <-mw:
			isMove = true
		}
		if !ok {
			return true, errors.New("watch channel closed")
		}
		if resp.CompactRevision != 0 {
			return true, errCompacted
		}
		if err := resp.Err(); err != nil {
			return true, err
		}
		if len(resp.Events) > 0 {
			m.apply(resp.Events, isMove)
		}
	}
}

func (m *mirror) decodeMove(kv *mvccpb.KeyValue) (leases.Move, error) {
	var mv leases.Move
	if err := json.Unmarshal(kv.Value, &mv); err != nil {
		return leases.Move{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	// The key is authoritative, as in package leases.
	mv.Target = strings.TrimPrefix(string(kv.Key), m.ks.Moves())
	return mv, nil
}

func (m *mirror) decodeClaim(kv *mvccpb.KeyValue) (leases.Claim, error) {
	var v leases.ClaimValue
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return leases.Claim{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return leases.Claim{
		Target: strings.TrimPrefix(string(kv.Key), m.ks.Claims()),
		Owner:  v.Owner,
		Epoch:  kv.ModRevision,
		Lease:  clientv3.LeaseID(kv.Lease),
	}, nil
}

func (m *mirror) replace(claims map[string]leases.Claim, moves map[string]leases.Move, rev int64) {
	m.mu.Lock()
	for id, cl := range m.claims {
		if _, ok := claims[id]; !ok {
			m.lastOwner[id] = cl.Owner
		}
	}
	for id := range claims {
		delete(m.lastOwner, id)
	}
	m.claims, m.moves, m.synced = claims, moves, true
	m.gen++
	m.advance(rev)
	m.mu.Unlock()
	m.onChange()
}

func (m *mirror) apply(evs []*clientv3.Event, isMove bool) {
	m.mu.Lock()
	var top int64
	for _, ev := range evs {
		rev := ev.Kv.ModRevision
		top = max(top, rev)
		if isMove {
			target := strings.TrimPrefix(string(ev.Kv.Key), m.ks.Moves())
			if ev.Type == clientv3.EventTypeDelete {
				delete(m.moves, target)
				continue
			}
			mv, err := m.decodeMove(ev.Kv)
			if err != nil {
				m.logger.Warn("skipping undecodable move", "err", err)
				delete(m.moves, target)
				continue
			}
			m.moves[target] = mv
			continue
		}
		target := strings.TrimPrefix(string(ev.Kv.Key), m.ks.Claims())
		if ev.Type == clientv3.EventTypeDelete {
			if cl, ok := m.claims[target]; ok {
				m.lastOwner[target] = cl.Owner
			}
			delete(m.claims, target)
			continue
		}
		delete(m.lastOwner, target)
		cl, err := m.decodeClaim(ev.Kv)
		if err != nil {
			m.logger.Warn("skipping undecodable claim", "err", err)
			delete(m.claims, target)
			continue
		}
		m.claims[target] = cl
	}
	m.gen++
	if !isMove {
		m.advance(top)
	}
	m.mu.Unlock()
	m.onChange()
}

// advance records that every claims/ change up to rev is applied; m.mu held.
func (m *mirror) advance(rev int64) {
	if rev > m.rev {
		m.rev = rev
		close(m.revCh)
		m.revCh = make(chan struct{})
	}
}

// waitRev waits until the claim writes up to rev are applied, so that an
// answer given after claiming shows the claims.
func (m *mirror) waitRev(ctx context.Context, rev int64) error {
	for {
		m.mu.RLock()
		cur, ch := m.rev, m.revCh
		m.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (m *mirror) isSynced() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.synced
}

// forget drops the last owners of targets for which keep is false.
func (m *mirror) forget(keep func(target string) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.lastOwner {
		if !keep(id) {
			delete(m.lastOwner, id)
			m.gen++
		}
	}
}
