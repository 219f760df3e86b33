package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// publishWindow bounds the async publishes in flight per call. It stays
	// well below nats.go's default of 4000 pending acks per JetStream
	// context, which the caller may share with other publishers.
	publishWindow = 512
	// ackTimeout bounds the wait for the next publish ack, so a lost
	// connection turns into an error instead of a hang when ctx has no
	// deadline.
	ackTimeout = 10 * time.Second

	// kvOpHeader marks a KV delete; nats.go does not export these names.
	kvOpHeader = "KV-Operation"
	kvOpDelete = "DEL"
)

// Publisher writes jobs and targets to the buckets. It is what the
// discoverer leader uses; it is safe for concurrent use.
type Publisher struct {
	js         jetstream.JetStream
	cfg        Config
	jobs       jetstream.KeyValue
	targets    jetstream.KeyValue
	targetsPre string // "$KV.<bucket>.", the subject prefix of target keys
	ackTimeout time.Duration
	m          *publisherMetrics
	log        *slog.Logger
}

// NewPublisher creates or updates the buckets (see Buckets) and returns a
// Publisher writing to them.
func NewPublisher(ctx context.Context, js jetstream.JetStream, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Publisher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	jobs, targets, err := Buckets(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	return &Publisher{
		js:         js,
		cfg:        cfg,
		jobs:       jobs,
		targets:    targets,
		targetsPre: "$KV." + cfg.TargetsBucket + ".",
		ackTimeout: ackTimeout,
		m:          newPublisherMetrics(reg),
		log:        logger.With("component", "events-publisher"),
	}, nil
}

// PutJob validates and stores j.
func (p *Publisher) PutJob(ctx context.Context, j Job) error {
	if err := j.Validate(); err != nil {
		return fmt.Errorf("put job %q: %w", j.Name, err)
	}
	b, err := encodeJob(j)
	if err != nil {
		return err
	}
	if _, err := p.jobs.Put(ctx, JobKey(j.Name), b); err != nil {
		return fmt.Errorf("put job %q: %w", j.Name, err)
	}
	p.m.published.WithLabelValues(bucketJobs, opPut).Inc()
	return nil
}

// DeleteJob removes a job. Deleting a job does not delete its targets: the
// discoverer deletes them itself, as it knows them.
func (p *Publisher) DeleteJob(ctx context.Context, name string) error {
	if err := p.jobs.Delete(ctx, JobKey(name)); err != nil {
		return fmt.Errorf("delete job %q: %w", name, err)
	}
	p.m.published.WithLabelValues(bucketJobs, opDelete).Inc()
	return nil
}

// PutTargets validates all of ts, then stores them with pipelined async
// publishes and waits for every ack. Nothing is published if one target is
// invalid. Its cost is proportional to len(ts), not to the catalog. On a
// failed ack it still waits for the rest and reports how many failed; the
// caller republishes (puts are idempotent).
func (p *Publisher) PutTargets(ctx context.Context, ts []Target) error {
	msgs := make([]*nats.Msg, len(ts))
	for i, t := range ts {
		if err := t.Validate(); err != nil {
			return fmt.Errorf("put targets: target %d (%s): %w", i, t.ID, err)
		}
		b, err := EncodeTarget(t)
		if err != nil {
			return err
		}
		msgs[i] = &nats.Msg{Subject: p.targetsPre + TargetKey(t.ID), Data: b}
	}
	if err := p.publish(ctx, msgs, opPut); err != nil {
		return fmt.Errorf("put targets: %w", err)
	}
	return nil
}

// DeleteTargets deletes targets by id, pipelined like PutTargets. A delete
// leaves a marker that followers see as the deletion.
func (p *Publisher) DeleteTargets(ctx context.Context, ids []string) error {
	msgs := make([]*nats.Msg, len(ids))
	for i, id := range ids {
		if !ValidID(id) {
			return fmt.Errorf("delete targets: %q is not a target id", id)
		}
		m := nats.NewMsg(p.targetsPre + TargetKey(id))
		m.Header.Set(kvOpHeader, kvOpDelete)
		msgs[i] = m
	}
	if err := p.publish(ctx, msgs, opDelete); err != nil {
		return fmt.Errorf("delete targets: %w", err)
	}
	return nil
}

// publish sends msgs with at most publishWindow acks outstanding and waits
// for all of them. op is the metric label of the messages.
func (p *Publisher) publish(ctx context.Context, msgs []*nats.Msg, op string) error {
	type inflight struct {
		f   jetstream.PubAckFuture
		key string
	}
	var (
		window   = make([]inflight, 0, min(len(msgs), publishWindow))
		acked    int
		failed   int
		firstErr error
		timer    = time.NewTimer(p.ackTimeout)
	)
	defer timer.Stop()
	defer func() { p.m.published.WithLabelValues(bucketTargets, op).Add(float64(acked)) }()
	fail := func(key string, err error) {
		failed++
		if firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", key, err)
		}
	}
	// await waits for one ack. It gives up on the whole batch when no ack
	// came for ackTimeout (a lost connection), rather than once per message.
	await := func(in inflight) error {
		select {
		case <-in.f.Ok():
			acked++
		case err := <-in.f.Err():
			fail(in.key, err)
		case <-timer.C:
			return fmt.Errorf("no ack within %s, %d of %d unacknowledged", p.ackTimeout, len(msgs)-acked, len(msgs))
		case <-ctx.Done():
			return ctx.Err()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(p.ackTimeout)
		return nil
	}
	for _, m := range msgs {
		if len(window) == cap(window) {
			if err := await(window[0]); err != nil {
				return err
			}
			window = append(window[:0], window[1:]...)
		}
		key := m.Subject[len(p.targetsPre):]
		f, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(p.ackTimeout))
		if err != nil {
			fail(key, err)
			continue
		}
		window = append(window, inflight{f, key})
	}
	for _, in := range window {
		if err := await(in); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d not acknowledged, first %w", failed, len(msgs), firstErr)
	}
	return nil
}

// Snapshot is what the buckets hold at one moment.
type Snapshot struct {
	// Jobs maps job name to Job.Hash; "" if the stored value is invalid.
	Jobs map[string]string
	// Targets maps target id to ValueHash of the stored value bytes.
	Targets map[string]uint64
	// Stray lists keys of the targets bucket that are not TargetKey of an
	// id (never written by a Publisher); they are invisible to followers.
	Stray []string
}

// Snapshot lists what the buckets hold now, for a new discoverer leader to
// diff its desired state against: a target whose ValueHash(EncodeTarget(t))
// differs, or which is missing, is put; an id not desired is deleted. Its
// cost is proportional to the catalog, so it is meant for leader start-up.
func (p *Publisher) Snapshot(ctx context.Context) (Snapshot, error) {
	s := Snapshot{Jobs: map[string]string{}, Targets: map[string]uint64{}}
	err := listBucket(ctx, p.jobs, func(e jetstream.KeyValueEntry) {
		name, ok := parseJobKey(e.Key())
		if !ok {
			return
		}
		j, err := DecodeJob(e.Value())
		if err != nil {
			s.Jobs[name] = ""
			return
		}
		s.Jobs[name] = j.Hash
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", p.cfg.JobsBucket, err)
	}
	err = listBucket(ctx, p.targets, func(e jetstream.KeyValueEntry) {
		if _, id, ok := parseTargetKey(e.Key()); ok {
			s.Targets[formatID(id)] = ValueHash(e.Value())
			return
		}
		s.Stray = append(s.Stray, e.Key())
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", p.cfg.TargetsBucket, err)
	}
	if len(s.Stray) > 0 {
		p.log.Warn("targets bucket holds keys that are not target keys", "count", len(s.Stray), "example", s.Stray[0])
	}
	return s, nil
}

// listBucket calls fn for the current value of every live key.
func listBucket(ctx context.Context, kv jetstream.KeyValue, fn func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() {
		select {
		case <-stopWatcher(w):
		case <-time.After(5 * time.Second):
		}
	}()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed before the snapshot was complete")
			}
			if e == nil {
				return nil
			}
			fn(e)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopWatcher stops w and drains its channel: the watcher's subscription
// callback blocks on a full channel, and only returns (and lets the
// subscription close the channel) once someone reads it. The drain ends
// when the channel closes, which Stop causes.
func stopWatcher(w jetstream.KeyWatcher) <-chan struct{} {
	done := make(chan struct{})
	_ = w.Stop()
	go func() {
		defer close(done)
		for range w.Updates() {
		}
	}()
	return done
}

// ValueHash is the hash Snapshot reports for a stored value.
func ValueHash(b []byte) uint64 { return xxhash.Sum64(b) }

func encodeJob(j Job) ([]byte, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode job %q: %w", j.Name, err)
	}
	return b, nil
}
