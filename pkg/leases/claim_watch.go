package leases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType says what an [Event] reports.
type EventType int

const (
	// ClaimDeleted: a claim was released, its lease expired or was revoked.
	// PrevOwner says whose it was.
	ClaimDeleted EventType = iota + 1
	// MoveStarted: moves/<target> was written; Move is its value.
	MoveStarted
	// MoveEnded: moves/<target> was deleted (taken over, aborted, or the
	// rebalancer's lease ended); Move is the value it had.
	MoveEnded
	// Resync: etcd compacted away events the watch had not yet delivered,
	// so some deletions or moves may be missing. Re-read claims and moves.
	Resync
)

func (t EventType) String() string {
	switch t {
	case ClaimDeleted:
		return "ClaimDeleted"
	case MoveStarted:
		return "MoveStarted"
	case MoveEnded:
		return "MoveEnded"
	case Resync:
		return "Resync"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change reported by [Claims.Watch].
type Event struct {
	Type      EventType
	Target    string
	PrevOwner string // ClaimDeleted: the owner the claim had
	Move      Move   // MoveStarted, MoveEnded
	Revision  int64  // etcd revision of the change
}

// Watch reports the moves that exist when it is called (as MoveStarted)
// and then, from that revision on, the deletion of any claim
// (the watch filters out puts, so claiming costs watchers nothing) and every
// start and end of a move. Claim deletions and moves come in revision order
// each, but not merged with one another. The etcd watches are restarted
// where they left off after errors or loss of the leader; after a compaction
// a Resync event says that events were missed. The channel is closed when
// ctx ends; the session ending does not end the watch.
func (c *Claims) Watch(ctx context.Context) <-chan Event {
	out := make(chan Event)
	w := &claimWatch{c: c, out: out}
	// Read the start revision now, so that "from now on" means from the
	// call on; if that fails the goroutine keeps trying.
	_ = w.start(ctx)
	go func() {
		defer close(out)
		w.run(ctx)
	}()
	return out
}

// start fixes the revision the watch starts after and reads the moves that
// already exist then: a move to this member may have been started between
// its registration and this call, and no later event would report it.
func (w *claimWatch) start(ctx context.Context) error {
	if w.claimRev != 0 {
		return nil
	}
	var pending []Event
	rev, err := scanMoves(ctx, w.c.s.cli, w.c.ks, func() { pending = pending[:0] }, func(m Move, modRev int64) {
		pending = append(pending, Event{Type: MoveStarted, Target: m.Target, Move: m, Revision: modRev})
	})
	if err != nil {
		return fmt.Errorf("read current moves: %w", err)
	}
	w.pending = pending
	w.claimRev = rev + 1
	w.moveRev = w.claimRev
	return nil
}

type claimWatch struct {
	c                 *Claims
	out               chan<- Event
	claimRev, moveRev int64   // next revision each watch must start at
	pending           []Event // moves that existed at the start, not yet sent
}

func (w *claimWatch) run(ctx context.Context) {
	logger := w.c.s.logger
	bo := newBackoff()
	for {
		err := w.watch(ctx, bo)
		if ctx.Err() != nil {
			return
		}
		logger.Warn("claim watch restarting", "err", err)
		if !bo.wait(ctx) {
			return
		}
	}
}

var errCompacted = errors.New("watch compacted")

func (w *claimWatch) watch(ctx context.Context, bo *backoff) error {
	cli, ks := w.c.s.cli, w.c.ks
	if err := w.start(ctx); err != nil {
		return err
	}
	for len(w.pending) > 0 {
		if !w.send(ctx, w.pending[0]) {
			return ctx.Err()
		}
		w.pending = w.pending[1:]
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	claims := cli.Watch(wctx, ks.Claims(), clientv3.WithPrefix(), clientv3.WithRev(w.claimRev),
		clientv3.WithFilterPut(), clientv3.WithPrevKV())
	moves := cli.Watch(wctx, ks.Moves(), clientv3.WithPrefix(), clientv3.WithRev(w.moveRev), clientv3.WithPrevKV())

	for {
		var resp clientv3.WatchResponse
		var ok, isMove bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case resp, ok = <-claims:
		case resp, ok = <-moves:
			isMove = true
		}
		if !ok {
			return errors.New("watch channel closed")
		}
		next := &w.claimRev
		if isMove {
			next = &w.moveRev
		}
		if resp.CompactRevision != 0 {
			*next = resp.CompactRevision
			if !w.send(ctx, Event{Type: Resync, Revision: resp.CompactRevision}) {
				return ctx.Err()
			}
			return errCompacted
		}
		if err := resp.Err(); err != nil {
			return err
		}
		bo.reset()
		for _, ev := range resp.Events {
			e, ok := w.event(ev, isMove)
			*next = ev.Kv.ModRevision + 1
			if ok && !w.send(ctx, e) {
				return ctx.Err()
			}
		}
	}
}

func (w *claimWatch) event(ev *clientv3.Event, isMove bool) (Event, bool) {
	ks := w.c.ks
	rev := ev.Kv.ModRevision
	if !isMove {
		if ev.Type != clientv3.EventTypeDelete {
			return Event{}, false
		}
		e := Event{Type: ClaimDeleted, Target: strings.TrimPrefix(string(ev.Kv.Key), ks.Claims()), Revision: rev}
		if ev.PrevKv != nil {
			var v ClaimValue
			if json.Unmarshal(ev.PrevKv.Value, &v) == nil {
				e.PrevOwner = v.Owner
			}
		}
		return e, true
	}
	target := strings.TrimPrefix(string(ev.Kv.Key), ks.Moves())
	if ev.Type == clientv3.EventTypeDelete {
		e := Event{Type: MoveEnded, Target: target, Move: Move{Target: target}, Revision: rev}
		if ev.PrevKv != nil {
			if m, err := decodeMove(ks, ev.PrevKv); err == nil {
				e.Move = m
			}
		}
		return e, true
	}
	m, err := decodeMove(ks, ev.Kv)
	if err != nil {
		w.c.s.logger.Warn("skipping undecodable move", "err", err)
		return Event{}, false
	}
	return Event{Type: MoveStarted, Target: target, Move: m, Revision: rev}, true
}

func (w *claimWatch) send(ctx context.Context, e Event) bool {
	select {
	case w.out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}
