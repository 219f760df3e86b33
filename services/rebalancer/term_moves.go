package rebalancer

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// moveState is where a pending move is in its life.
type moveState int

const (
	moveStarting moveState = iota // StartMove sent, no answer yet
	moveStarted                   // its key is in etcd
	moveEnding                    // its key is gone; finding out whether it was taken over
)

// pendingMove is a move this term started or adopted.
type pendingMove struct {
	m       leases.Move
	started time.Time
	state   moveState
	// abortedAs is the outcome to record if the move ends without a
	// takeover: set when this term decides to abort it.
	abortedAs string
	// aborting: an AbortMove call is under way.
	aborting bool
	// retryAbort: aborting failed and must be tried again.
	retryAbort bool
	// checkedEpoch is the destination's claim epoch last checked against
	// moves/ (see checkDestinationClaim), so that each is read once.
	checkedEpoch int64
}

type queuedMove struct {
	placement.Move
	epoch int64
}

// reconcileMoves lists moves/: pending moves no longer there have ended
// (while no watch saw it), and moves there that this term did not start are
// adopted: tracked to their end and aborted at their deadline.
func (t *term) reconcileMoves(ctx context.Context) error {
	list, err := leases.ListMoves(ctx, t.cli, t.ks)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(list))
	for _, m := range list {
		present[m.Target] = true
		if _, ok := t.pending[m.Target]; ok {
			continue
		}
		t.logger.Info("adopting move left by a previous leader", "target", m.Target, "from", m.From, "to", m.To, "deadline", m.Deadline)
		t.pending[m.Target] = &pendingMove{m: m, started: time.Now(), state: moveStarted}
	}
	for target, p := range t.pending {
		if !present[target] && p.state == moveStarted {
			t.moveEnded(ctx, target, 0)
		}
	}
	return nil
}

// moveEnded is called when a pending move's key was deleted at revision
// rev (0: unknown). Whether it was completed is found out outside the loop.
func (t *term) moveEnded(ctx context.Context, target string, rev int64) {
	p, ok := t.pending[target]
	if !ok || p.state == moveEnding {
		return
	}
	p.state = moveEnding
	t.do(ctx, func() func() {
		done, kv := t.tookOver(ctx, p.m, rev)
		return func() { t.finish(p, done, kv) }
	})
}

// finish records the end of a pending move.
func (t *term) finish(p *pendingMove, done bool, kv *mvccpb.KeyValue) {
	target := p.m.Target
	if t.pending[target] != p {
		return
	}
	delete(t.pending, target)
	outcome := p.abortedAs
	if outcome == "" {
		outcome = OutcomeVanished
	}
	if done {
		outcome = OutcomeCompleted
		// The claim watch is a separate stream and may not have delivered
		// the takeover yet; a plan made now must not see the old owner.
		if kv != nil && kv.ModRevision > t.claimsRev {
			t.putClaim(target, kv)
		}
	}
	t.r.record(MoveRecord{
		Time: p.started, Target: target, From: p.m.From, To: p.m.To, Reason: p.m.Reason,
		Duration: time.Since(p.started), Outcome: outcome,
	})
	if len(t.pending) == 0 && len(t.queue) == 0 {
		// The plan is done: look again at once rather than at the next tick.
		t.schedule(0)
	}
}

// tookOver says whether move m, whose key was deleted at rev (0: unknown),
// was completed, and returns the claim as the takeover wrote it. It was
// completed if and only if the claim was written in the same revision: only
// the destination's takeover transaction writes the claim and deletes the
// move together.
func (t *term) tookOver(ctx context.Context, m leases.Move, rev int64) (bool, *mvccpb.KeyValue) {
	key := t.ks.Claim(m.Target)
	if rev > 0 {
		resp, err := t.cli.Get(ctx, key, clientv3.WithRev(rev))
		if err == nil {
			if len(resp.Kvs) == 1 && resp.Kvs[0].ModRevision == rev {
				return true, resp.Kvs[0]
			}
			return false, nil
		}
	}
	// Revision unknown or compacted: judge by the current claim.
	resp, err := t.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return false, nil
	}
	var v leases.ClaimValue
	if json.Unmarshal(resp.Kvs[0].Value, &v) != nil {
		return false, nil
	}
	return v.Owner == m.To && resp.Kvs[0].ModRevision > m.Epoch, nil
}

// abort deletes a started move's key; its end is then seen on the watch. A
// takeover that wins the race is still recorded as completed.
func (t *term) abort(ctx context.Context, p *pendingMove, outcome string) {
	if p.abortedAs == "" {
		p.abortedAs = outcome
	}
	if p.state != moveStarted || p.aborting {
		return // a starting move is aborted once its start is confirmed
	}
	p.aborting, p.retryAbort = true, false
	t.do(ctx, func() func() {
		err := leases.AbortMove(ctx, t.cli, t.ks, p.m.Target)
		return func() {
			p.aborting = false
			if err != nil {
				t.logger.Warn("abort move", "target", p.m.Target, "err", err)
				p.retryAbort = true
				return
			}
			t.logger.Info("move aborted", "target", p.m.Target, "from", p.m.From, "to", p.m.To, "why", p.abortedAs)
		}
	})
}

// abortExpired aborts started moves past their deadline (and retries failed
// aborts) and returns the time until the next deadline (0: none).
func (t *term) abortExpired(ctx context.Context) time.Duration {
	now := time.Now()
	var next time.Duration
	for _, p := range t.pending {
		if p.state != moveStarted || p.aborting {
			continue
		}
		switch {
		case p.retryAbort:
			t.abort(ctx, p, p.abortedAs)
		case p.abortedAs != "":
		case !now.Before(p.m.Deadline):
			t.abort(ctx, p, OutcomeTimeout)
		default:
			if d := p.m.Deadline.Sub(now); next == 0 || d < next {
				next = d
			}
		}
	}
	return next
}

// abortStale aborts pending moves that can no longer complete: the claim
// vanished or changed hands other than to the destination, or the
// destination left or is draining. Waiting for their deadline would only
// hold the plan up. A claim now held by the destination is most likely the
// takeover whose end the move watch has not delivered yet; that move is
// aborted only if checkDestinationClaim finds it was not.
func (t *term) abortStale(ctx context.Context) {
	for target, p := range t.pending {
		if p.abortedAs != "" || p.state == moveEnding {
			continue
		}
		c, ok := t.claims[target]
		_, destLive := t.members[p.m.To]
		switch {
		case ok && c.Epoch != p.m.Epoch && c.Owner == p.m.To:
			t.checkDestinationClaim(ctx, p, c.Epoch)
		case !ok || c.Epoch != p.m.Epoch || !destLive || t.drains[p.m.To]:
			t.abort(ctx, p, OutcomeStale)
		}
	}
}

// checkDestinationClaim finds out how the destination came to own the
// target: by the takeover (which deletes moves/<target> in the claim's own
// revision; its delete event is on its way) or by claiming it afresh after
// the source's claim went (the source crashed): then the move can never
// end by a takeover and would hold up the next plan until its deadline.
func (t *term) checkDestinationClaim(ctx context.Context, p *pendingMove, epoch int64) {
	if p.state != moveStarted || p.checkedEpoch == epoch {
		return
	}
	p.checkedEpoch = epoch
	t.do(ctx, func() func() {
		// Read at the claim's revision: the move key is there if and only
		// if the claim was not written by the takeover.
		resp, err := t.cli.Get(ctx, t.ks.Move(p.m.Target), clientv3.WithRev(epoch), clientv3.WithCountOnly())
		return func() {
			switch {
			case err != nil:
				// Compacted: the move's deadline ends it. Anything else
				// (etcd unreachable) is checked again at the next
				// evaluation.
				t.logger.Debug("check destination claim", "target", p.m.Target, "err", err)
				if !errors.Is(err, rpctypes.ErrCompacted) && p.checkedEpoch == epoch {
					p.checkedEpoch = 0
				}
			case resp.Count > 0 && t.pending[p.m.Target] == p:
				t.abort(ctx, p, OutcomeStale)
			}
		}
	})
}

// startQueued starts queued moves within the rate and concurrency limits
// and returns how long until the rate limit allows the next (0: nothing
// waits on the rate).
func (t *term) startQueued(ctx context.Context) time.Duration {
	for len(t.queue) > 0 && len(t.pending) < t.cfg.MaxConcurrentMoves {
		q := t.queue[0]
		if !t.startable(q) {
			t.queue = t.queue[1:]
			continue
		}
		res := t.lim.Reserve()
		if d := res.Delay(); d > 0 {
			res.Cancel()
			return d
		}
		t.queue = t.queue[1:]
		now := time.Now()
		p := &pendingMove{
			m: leases.Move{
				Target: q.Target, From: q.From, To: q.To, Epoch: q.epoch,
				Deadline: now.Add(t.cfg.MoveTimeout), Reason: string(q.Reason),
			},
			started: now,
			state:   moveStarting,
		}
		t.pending[q.Target] = p
		t.do(ctx, func() func() {
			err := leases.StartMove(ctx, t.s, t.ks, p.m)
			return func() { t.startDone(ctx, p, err) }
		})
	}
	return 0
}

// startDone handles StartMove's answer.
func (t *term) startDone(ctx context.Context, p *pendingMove, err error) {
	if t.pending[p.m.Target] != p || p.state != moveStarting {
		return // it already ended (a very quick takeover)
	}
	if err == nil {
		p.state = moveStarted
		if p.abortedAs != "" {
			t.abort(ctx, p, p.abortedAs) // found stale while starting
		}
		return
	}
	delete(t.pending, p.m.Target)
	outcome := OutcomeFailed
	if errors.Is(err, leases.ErrNotOwner) || errors.Is(err, leases.ErrMoveInProgress) {
		outcome = OutcomeRejected
		t.logger.Debug("move refused", "target", p.m.Target, "err", err)
	} else if ctx.Err() == nil {
		t.logger.Warn("start move", "target", p.m.Target, "err", err)
	}
	t.r.record(MoveRecord{Time: p.started, Target: p.m.Target, From: p.m.From, To: p.m.To,
		Reason: p.m.Reason, Duration: time.Since(p.started), Outcome: outcome})
	if t.s.Err() != nil {
		t.queue = nil
	}
	if len(t.pending) == 0 && len(t.queue) == 0 {
		t.schedule(0)
	}
}

// startable re-checks a queued move against the current view: the planned
// epoch still holds, no move of the target is pending, and both ends are
// live members, the destination not draining.
func (t *term) startable(q queuedMove) bool {
	c, ok := t.claims[q.Target]
	if !ok || c.Epoch != q.epoch || c.Owner != q.From {
		return false
	}
	if _, ok := t.pending[q.Target]; ok {
		return false
	}
	_, src := t.members[q.From]
	_, dst := t.members[q.To]
	return src && dst && !t.drains[q.To]
}

// abandon ends the term: pending moves die with the lease (Run revokes it),
// so they are recorded as abandoned.
func (t *term) abandon() {
	for target, p := range t.pending {
		t.r.record(MoveRecord{
			Time: p.started, Target: target, From: p.m.From, To: p.m.To, Reason: p.m.Reason,
			Duration: time.Since(p.started), Outcome: OutcomeAbandoned,
		})
	}
	clear(t.pending)
	t.queue = nil
}
