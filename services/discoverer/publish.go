package discoverer

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// publishBatch bounds the targets resolved and sent per call, so a full
// reconciliation of a large catalog neither holds the catalog lock nor
// builds all its events at once.
const publishBatch = 1024

// publishLoop publishes changes until ctx ends: first, once discovery
// has settled, a full reconciliation, then the changes as they come. Any failure (NATS down,
// a timeout) is retried with backoff and followed by a full
// reconciliation, since what failed is unknown; so is a NATS reconnection,
// since the server may have lost or missed writes meanwhile.
func (d *Discoverer) publishLoop(ctx context.Context) {
	needReconcile := true
	var (
		delay      time.Duration
		reconnects = d.natsReconnects()
	)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if r := d.natsReconnects(); r != reconnects {
			reconnects = r
			needReconcile = true
		}
		if needReconcile && !d.settled(time.Now()) {
			// Changes wait too: the reconciliation comes first.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		err := d.publish(ctx, &needReconcile)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			d.m.publishFailures.Inc()
			needReconcile = true
			// Make the publisher again: if the NATS server lost its
			// store, this recreates the buckets.
			d.pub = nil
			delay = nextRetry(delay)
			d.logger.Warn("publish failed, will reconcile", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		select {
		case <-ctx.Done():
			return
		case <-d.publishTrigger:
		case <-tick.C:
		}
	}
}

// natsReconnects counts the connection's reconnections (0 without one).
func (d *Discoverer) natsReconnects() uint64 {
	nc := d.js.Conn()
	if nc == nil {
		return 0
	}
	if nc.Status() != nats.CONNECTED {
		// Not yet reconnected: make the next check differ from any
		// count seen while connected.
		return ^uint64(0)
	}
	return nc.Stats().Reconnects
}

// publish reconciles if asked, then publishes the recorded changes.
func (d *Discoverer) publish(ctx context.Context, needReconcile *bool) error {
	if d.pub == nil {
		p, err := d.newPublisher(ctx)
		if err != nil {
			return fmt.Errorf("create publisher: %w", err)
		}
		d.pub = p
	}
	start := time.Now()
	reconciled := false
	if *needReconcile {
		if err := d.reconcile(ctx); err != nil {
			return err
		}
		*needReconcile = false
		reconciled = true
	}
	ch := d.cat.takeChanges()
	if ch.empty() && !reconciled {
		return nil
	}
	if err := d.flush(ctx, ch); err != nil {
		return err
	}
	d.m.publishDuration.Observe(time.Since(start).Seconds())
	d.published.Store(true)
	return nil
}

// reconcile compares the buckets with the desired catalog and records
// every difference as a change.
func (d *Discoverer) reconcile(ctx context.Context) error {
	d.m.reconciliations.Inc()
	start := time.Now()
	snap, err := d.pub.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: snapshot: %w", err)
	}
	jobs, targets := d.cat.snapshotDesired()
	jobDiff, idDiff, err := diffSnapshot(snap, jobs, targets)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	d.cat.markChanged(jobDiff, idDiff)
	d.logger.Info("reconciled catalog with buckets",
		"jobs", len(jobs), "targets", len(targets),
		"bucket_jobs", len(snap.Jobs), "bucket_targets", len(snap.Targets),
		"jobs_to_fix", len(jobDiff), "targets_to_fix", len(idDiff),
		"duration", time.Since(start))
	return nil
}

// flush publishes changes as the catalog now stands: jobs first (so a
// scraper never sees a target of an unknown job), then targets, then job
// deletions.
func (d *Discoverer) flush(ctx context.Context, ch changes) error {
	jobPuts, jobDels := d.cat.resolveJobs(ch.jobs)
	for _, j := range jobPuts {
		if err := d.pub.PutJob(ctx, j); err != nil {
			return fmt.Errorf("put job %q: %w", j.Name, err)
		}
	}
	d.m.publishedSinceStart.Add(float64(len(jobPuts)))

	ids := make([]uint64, 0, min(len(ch.targets), publishBatch))
	send := func() error {
		puts, dels := d.cat.resolveTargets(ids)
		ids = ids[:0]
		if len(puts) > 0 {
			if err := d.pub.PutTargets(ctx, puts); err != nil {
				return fmt.Errorf("put %d targets: %w", len(puts), err)
			}
		}
		if len(dels) > 0 {
			if err := d.pub.DeleteTargets(ctx, dels); err != nil {
				return fmt.Errorf("delete %d targets: %w", len(dels), err)
			}
		}
		d.m.publishedSinceStart.Add(float64(len(puts) + len(dels)))
		return nil
	}
	for id := range ch.targets {
		ids = append(ids, id)
		if len(ids) == publishBatch {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if len(ids) > 0 {
		if err := send(); err != nil {
			return err
		}
	}

	for _, name := range jobDels {
		if err := d.pub.DeleteJob(ctx, name); err != nil {
			return fmt.Errorf("delete job %q: %w", name, err)
		}
	}
	d.m.publishedSinceStart.Add(float64(len(jobDels)))
	return nil
}
