package scraper

import (
	"context"
	"errors"
)

// workBatches is how many claim transactions one unit of work carries, so
// that results flow back to the actor while a large claim is under way.
const workBatches = 4

// worker runs the actor's etcd work (releases, claims, owner checks) one
// unit at a time, so that no transaction ever blocks the actor.
func (s *Scraper) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		for {
			var w func(context.Context)
			if !s.call(ctx, func() { w = s.nextWork() }) {
				return
			}
			if w == nil {
				break
			}
			w(ctx)
		}
	}
}

// nextWork takes the next unit of etcd work off the actor's queues:
// releases first (they free targets for others), then claims, then owner
// checks. It runs on the actor.
func (s *Scraper) nextWork() func(context.Context) {
	a := &s.a
	claims, gen := a.claims, a.gen
	if claims == nil {
		return nil
	}
	if len(a.releaseQ) > 0 {
		n := min(len(a.releaseQ), workBatches*s.cfg.ClaimBatch)
		batch := a.releaseQ[:n:n]
		a.releaseQ = a.releaseQ[n:]
		return func(ctx context.Context) {
			if _, err := claims.Release(ctx, batch); err != nil && ctx.Err() == nil {
				s.logger.Warn("release failed", "claims", len(batch), "err", err)
			}
		}
	}
	if len(a.claimQ) > 0 {
		limit := workBatches * s.cfg.ClaimBatch
		ids := make([]string, 0, min(len(a.claimQ), limit))
		seen := make(map[string]bool, cap(ids))
		n := 0
		for ; n < len(a.claimQ) && len(ids) < limit; n++ {
			id := a.claimQ[n]
			if st, ok := a.targets[id]; ok && st.phase == phaseClaiming && !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		a.claimQ = a.claimQ[n:]
		if len(a.claimQ) == 0 {
			a.claimQ = nil
		}
		if len(ids) == 0 {
			return s.nextWork()
		}
		return func(ctx context.Context) {
			won, err := claims.Claim(ctx, ids)
			s.post(ctx, func() { s.onClaimed(gen, ids, won, err) })
		}
	}
	if len(a.checkQ) > 0 {
		chk := a.checkQ[0]
		a.checkQ = a.checkQ[1:]
		if len(a.checkQ) == 0 {
			a.checkQ = nil
		}
		return func(ctx context.Context) {
			c, found, err := claims.Owner(ctx, chk.id)
			if err != nil && errors.Is(err, context.Canceled) {
				return
			}
			s.post(ctx, func() { s.onOwner(gen, chk, c, found, err) })
		}
	}
	return nil
}
