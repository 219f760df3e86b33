package discoverer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// errSessionLost: the election lease expired or its keepalive stopped.
var errSessionLost = errors.New("election session lost")

const (
	minRetry = 100 * time.Millisecond
	maxRetry = 5 * time.Second
)

// nextRetry doubles a retry delay up to maxRetry.
func nextRetry(d time.Duration) time.Duration {
	if d < minRetry {
		return minRetry
	}
	return min(2*d, maxRetry)
}

// electLoop campaigns until ctx ends; each won term publishes until its
// session is lost, then campaigns again.
func (d *Discoverer) electLoop(ctx context.Context) {
	var delay time.Duration
	for ctx.Err() == nil {
		err := d.term(ctx, func() { delay = 0 })
		if ctx.Err() != nil {
			return
		}
		delay = nextRetry(delay)
		d.logger.Warn("election: campaigning again", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// term opens an election session, campaigns, and leads until the session
// is lost or ctx ends. established is called once a session exists.
func (d *Discoverer) term(ctx context.Context, established func()) error {
	ttl := d.cfg.electionTTLSeconds()
	// The lease is granted here, under ctx, so that a shutdown while etcd
	// is unreachable does not hang; the session's own context outlives ctx
	// so that Close can still revoke the lease on shutdown, which hands
	// leadership over at once.
	lease, err := d.etcd.Grant(ctx, int64(ttl))
	if err != nil {
		return fmt.Errorf("election: grant lease: %w", err)
	}
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	defer scancel()
	sess, err := concurrency.NewSession(d.etcd, concurrency.WithLease(lease.ID), concurrency.WithTTL(ttl), concurrency.WithContext(sctx))
	if err != nil {
		return fmt.Errorf("election: session: %w", err)
	}
	defer func() {
		// Revokes the lease: the election key goes with it.
		if err := sess.Close(); err != nil && ctx.Err() != nil {
			d.logger.Warn("election: revoke lease", "err", err)
		}
	}()
	established()

	el := concurrency.NewElection(sess, d.cfg.Keyspace.Election("discoverer"))
	cctx, ccancel := context.WithCancel(ctx)
	stop := cancelOnDone(sess.Done(), ccancel)
	err = el.Campaign(cctx, d.cfg.ID)
	stop()
	ccancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-sess.Done():
			return errSessionLost
		default:
		}
		return fmt.Errorf("election: campaign: %w", err)
	}
	// Campaign does not watch the session: make sure the key it waited
	// on is still ours.
	select {
	case <-sess.Done():
		return errSessionLost
	default:
	}
	d.lead(ctx, sess)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errSessionLost
}

// cancelOnDone calls cancel when done closes, until stop is called; stop
// waits for the watcher to exit.
func cancelOnDone(done <-chan struct{}, cancel func()) (stop func()) {
	quit := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-done:
			cancel()
		case <-quit:
		}
	}()
	return func() {
		close(quit)
		<-exited
	}
}

// lead publishes until the session is lost or ctx ends. Publishing stops
// before lead returns: anything in flight is cancelled.
func (d *Discoverer) lead(ctx context.Context, sess *concurrency.Session) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := cancelOnDone(sess.Done(), cancel)
	defer stop()

	d.cat.track(true)
	d.published.Store(false)
	d.leader.Store(true)
	d.m.leader.Set(1)
	d.logger.Info("elected leader", "id", d.cfg.ID, "lease", fmt.Sprintf("%x", sess.Lease()))

	d.publishLoop(lctx)

	d.leader.Store(false)
	d.m.leader.Set(0)
	d.cat.track(false)
	if ctx.Err() == nil {
		d.logger.Warn("lost leadership: election session ended", "id", d.cfg.ID)
	}
}
