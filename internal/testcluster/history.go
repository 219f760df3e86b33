package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

// History records every change under claims/ and moves/ of a keyspace, as
// etcd's own history has it, from the moment it is made. It is the ground
// truth tests check moves, failovers and limits against, whoever made the
// changes and independent of their own bookkeeping: a rebalancer that was
// killed cannot tell which of its moves completed after it lost etcd, and
// the one after it never knew of them.
type History struct {
	cli    *clientv3.Client
	ks     leases.Keyspace
	prefix string            // the keyspace's prefix: claims and moves both
	start  map[string]string // target → owner when the history began
	done   chan struct{}

	mu      sync.Mutex
	changes []Change
	rev     int64         // the latest revision applied
	applied chan struct{} // closed and replaced when rev advances
	err     error
}

// ChangeKind is what a [Change] did.
type ChangeKind int

// The kinds of change a History records.
const (
	ClaimPut ChangeKind = iota
	ClaimDeleted
	MoveStarted
	MoveEnded
)

// Change is one event under claims/ or moves/.
type Change struct {
	Kind ChangeKind
	// At is when the history received it.
	At     time.Time
	Rev    int64
	Target string
	// Owner is the claim's owner after a ClaimPut, before a ClaimDeleted.
	Owner string
	// Move is the move started (MoveStarted) or the move that ended
	// (MoveEnded).
	Move leases.Move
}

// syncKey is where [History.Sync] writes its markers, under the keyspace's
// prefix; nothing else reads it.
const syncKey = "history-sync"

// WatchHistory starts a history of ks's claims and moves, read with cli
// from its current revision on; it stops at the end of the test.
func WatchHistory(t testing.TB, cli *clientv3.Client, ks leases.Keyspace) *History {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cli.Get(ctx, ks.Claims(), clientv3.WithPrefix())
	require.NoError(t, err)
	h := &History{
		cli: cli, ks: ks, prefix: strings.TrimSuffix(ks.Claims(), "claims/"),
		start: map[string]string{}, done: make(chan struct{}), applied: make(chan struct{}),
	}
	for _, kv := range resp.Kvs {
		var v leases.ClaimValue
		require.NoError(t, json.Unmarshal(kv.Value, &v))
		h.start[strings.TrimPrefix(string(kv.Key), ks.Claims())] = v.Owner
	}
	// One watch sees both sides of a takeover transaction in the same
	// revision.
	wc := cli.Watch(ctx, h.prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(resp.Header.Revision+1))
	go h.run(ctx, wc)
	t.Cleanup(func() {
		cancel()
		<-h.done
	})
	return h
}

func (h *History) run(ctx context.Context, wc clientv3.WatchChan) {
	defer close(h.done)
	for resp := range wc {
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				h.fail(fmt.Errorf("history watch: %w", err))
			}
			return
		}
		now := time.Now()
		var chs []Change
		var rev int64
		for _, ev := range resp.Events {
			rev = max(rev, ev.Kv.ModRevision)
			ch, ok, err := h.decode(ev)
			if err != nil {
				h.fail(err)
				return
			}
			if ok {
				ch.At = now
				chs = append(chs, ch)
			}
		}
		h.mu.Lock()
		h.changes = append(h.changes, chs...)
		if rev > h.rev {
			h.rev = rev
			close(h.applied)
			h.applied = make(chan struct{})
		}
		h.mu.Unlock()
	}
}

func (h *History) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

func (h *History) decode(ev *clientv3.Event) (Change, bool, error) {
	key := string(ev.Kv.Key)
	ch := Change{Rev: ev.Kv.ModRevision}
	put := ev.Type == clientv3.EventTypePut
	kv := ev.Kv
	if !put {
		kv = ev.PrevKv
	}
	switch {
	case strings.HasPrefix(key, h.ks.Claims()):
		ch.Target = strings.TrimPrefix(key, h.ks.Claims())
		ch.Kind = ClaimPut
		if !put {
			ch.Kind = ClaimDeleted
		}
		if kv != nil {
			var v leases.ClaimValue
			if err := json.Unmarshal(kv.Value, &v); err != nil {
				return ch, false, fmt.Errorf("decode claim %s: %w", key, err)
			}
			ch.Owner = v.Owner
		}
	case strings.HasPrefix(key, h.ks.Moves()):
		ch.Target = strings.TrimPrefix(key, h.ks.Moves())
		ch.Kind = MoveStarted
		if !put {
			ch.Kind = MoveEnded
		}
		if kv != nil {
			if err := json.Unmarshal(kv.Value, &ch.Move); err != nil {
				return ch, false, fmt.Errorf("decode move %s: %w", key, err)
			}
			ch.Move.Target = ch.Target // the key, not the value, names it
		}
	default:
		return ch, false, nil
	}
	return ch, true, nil
}

// Start returns the owner of every target claimed when the history began.
func (h *History) Start() map[string]string { return maps.Clone(h.start) }

// Changes returns the changes so far, in revision order, failing the test
// if the watch broke.
func (h *History) Changes(t testing.TB) []Change {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NoError(t, h.err)
	return slices.Clone(h.changes)
}

// Sync returns once every change made to etcd before the call is in the
// history: it writes a marker under the keyspace and waits for the watch,
// which delivers events in revision order, to reach it.
func (h *History) Sync(t testing.TB) {
	t.Helper()
	resp, err := h.cli.Put(context.Background(), h.prefix+syncKey, "")
	require.NoError(t, err)
	want := resp.Header.Revision
	timeout := time.After(10 * time.Second)
	for stopped := false; ; {
		h.mu.Lock()
		rev, applied, err := h.rev, h.applied, h.err
		h.mu.Unlock()
		require.NoError(t, err)
		switch {
		case rev >= want:
			return
		case stopped:
			t.Fatalf("history stopped at revision %d before reaching %d", rev, want)
		}
		select {
		case <-applied:
		case <-h.done:
			stopped = true // look once more: it may have applied want last
		case <-timeout:
			t.Fatalf("history at revision %d, still not at %d", rev, want)
		}
	}
}
