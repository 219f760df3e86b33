package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"
)

// client sends one batch to a backend, as pdata (metricsClient) or as an
// encoded OTLP request (encodedClient). Errors that are not *sendError are
// taken as retryable (connection refused, timeouts).
type client interface {
	close() error
}

type metricsClient interface {
	client
	send(ctx context.Context, md pmetric.Metrics) error
}

// encodedClient sends the protobuf of an ExportMetricsServiceRequest as it
// is: encoded scrapes are concatenated, not decoded.
type encodedClient interface {
	client
	// sendEncoded sends the concatenation of parts (encoded scrapes) as
	// one request. The parts go back to the pool once it returns, so it
	// must not read them after that, unless it took a reference (buf.ref)
	// that it releases when it is done.
	sendEncoded(ctx context.Context, parts []*buf) error
}

// BatchConfig bounds a request: the sender sends once MaxPoints data points
// are gathered or MaxWait has passed since the first of them was taken off
// the queue. A single scrape larger than MaxPoints is sent whole.
type BatchConfig struct {
	MaxPoints int           `yaml:"max_points,omitempty"`
	MaxWait   time.Duration `yaml:"max_wait,omitempty"`
}

// RetryConfig is the exponential backoff of retryable failures.
type RetryConfig struct {
	// InitialInterval is the first wait; each retry doubles it up to
	// MaxInterval. A random ±Jitter fraction is applied to every wait.
	InitialInterval time.Duration `yaml:"initial_interval,omitempty"`
	MaxInterval     time.Duration `yaml:"max_interval,omitempty"`
	Jitter          float64       `yaml:"jitter,omitempty"`
	// MaxElapsed gives up on a batch (dropped, reason "retries_exhausted")
	// after retrying it this long; 0 retries until shutdown.
	MaxElapsed time.Duration `yaml:"max_elapsed,omitempty"`
}

// Defaults of the pipeline settings.
const (
	DefaultQueueSize       = 1024
	DefaultBatchMaxPoints  = 8192
	DefaultBatchMaxWait    = 200 * time.Millisecond
	DefaultInitialInterval = 100 * time.Millisecond
	DefaultMaxInterval     = 5 * time.Second
	DefaultJitter          = 0.2
	DefaultMaxElapsed      = 5 * time.Minute
	DefaultTimeout         = 10 * time.Second
)

// pipelineConfig is what a pipeline needs besides its client.
type pipelineConfig struct {
	name    string
	batch   BatchConfig
	retry   RetryConfig
	timeout time.Duration
}

func (c *pipelineConfig) setDefaults() {
	if c.batch.MaxPoints <= 0 {
		c.batch.MaxPoints = DefaultBatchMaxPoints
	}
	if c.batch.MaxWait <= 0 {
		c.batch.MaxWait = DefaultBatchMaxWait
	}
	if c.retry.InitialInterval <= 0 {
		c.retry.InitialInterval = DefaultInitialInterval
	}
	if c.retry.MaxInterval <= 0 {
		c.retry.MaxInterval = DefaultMaxInterval
	}
	if c.retry.Jitter < 0 || c.retry.Jitter >= 1 {
		c.retry.Jitter = DefaultJitter
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
}

// pipeline is a queue and the goroutine that empties it into a client.
type pipeline struct {
	cfg     pipelineConfig
	q       queue
	c       client
	m       *exporterMetrics
	logger  *slog.Logger
	drops   dropLog
	closing atomic.Bool

	// waitCtx is cancelled by Shutdown: stop waiting for more, drain.
	waitCtx    context.Context
	stopWait   context.CancelFunc
	sendCtx    context.Context // cancelled when Shutdown's deadline passes
	cancelSend context.CancelFunc
	done       chan struct{}
	shutdown   sync.Once
	closed     sync.Once
	closeErr   error
}

func newPipeline(cfg pipelineConfig, q queue, c client, m *metrics, logger *slog.Logger) *pipeline {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &pipeline{
		cfg:    cfg,
		q:      q,
		c:      c,
		m:      m.forExporter(cfg.name),
		logger: logger.With("component", "export", "exporter", cfg.name),
		done:   make(chan struct{}),
	}
	p.waitCtx, p.stopWait = context.WithCancel(context.Background())
	p.sendCtx, p.cancelSend = context.WithCancel(context.Background())
	p.m.queueCapacity.Set(float64(q.capacity()))
	p.m.queueLength.Set(float64(q.len()))
	go p.run()
	return p
}

// ConsumeMetrics queues md. It fails at once when the queue is full.
func (p *pipeline) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	if p.closing.Load() {
		return ErrShutdown
	}
	if err := p.q.put(md); err != nil {
		p.m.dropped(reasonQueueFull, md.DataPointCount())
		p.drops.note(p.logger, reasonQueueFull, err)
		return err
	}
	p.m.queueLength.Set(float64(p.q.len()))
	return nil
}

// AcceptsEncoded reports whether the exporter sends encoded scrapes as they
// are (OTLP); it implements otlp.EncodedConsumer.
func (p *pipeline) AcceptsEncoded() bool {
	_, ok := p.c.(encodedClient)
	return ok
}

// ConsumeEncoded queues a scrape encoded as an OTLP request with points data
// points. The queue copies req (into a pooled buffer, or to disk): req is
// the caller's again once it returns (otlp.EncodedConsumer). It fails at
// once when the queue is full.
func (p *pipeline) ConsumeEncoded(_ context.Context, req []byte, points int) error {
	if p.closing.Load() {
		return ErrShutdown
	}
	if err := p.q.putEncoded(req, points); err != nil {
		p.m.dropped(reasonQueueFull, points)
		p.drops.note(p.logger, reasonQueueFull, err)
		return err
	}
	p.m.queueLength.Set(float64(p.q.len()))
	return nil
}

// Shutdown stops accepting, sends what is queued until ctx ends, then
// cancels the send in flight and stops the sender. What a persistent queue
// still holds stays on disk for the next start.
func (p *pipeline) Shutdown(ctx context.Context) error {
	p.shutdown.Do(func() {
		p.closing.Store(true)
		p.stopWait()
	})
	var err error
	select {
	case <-p.done:
	case <-ctx.Done():
		p.cancelSend()
		<-p.done
		err = ctx.Err()
	}
	p.cancelSend()
	p.closed.Do(func() {
		p.closeErr = errors.Join(p.c.close(), p.q.close())
	})
	if err == nil {
		err = p.closeErr
	}
	return err
}

func (p *pipeline) run() {
	defer close(p.done)
	for {
		first, err := p.q.get(p.waitCtx)
		if err != nil {
			return // shut down and drained
		}
		batch, last, points := p.gather(first)
		payload, err := p.payload(batch)
		if err != nil {
			// Cannot happen for what the appender and the queues produce.
			p.m.dropped("marshal", points)
			p.drops.note(p.logger, "marshal", err)
			_ = p.q.ack(last)
			release(batch)
			continue
		}
		if !p.deliver(payload, points) {
			// Stopped mid-delivery. A persistent queue keeps the batch for
			// the next start; from memory it is lost.
			if _, ok := p.q.(*memQueue); ok {
				p.m.dropped(reasonShutdown, points)
				p.drops.note(p.logger, reasonShutdown, context.Canceled)
				_ = p.q.ack(last)
				p.dropRest()
			}
			release(batch)
			p.m.queueLength.Set(float64(p.q.len()))
			return
		}
		if err := p.q.ack(last); err != nil {
			p.logger.Error("ack queue", "err", err)
		}
		// Sent, dropped for good, or acked on disk: the bytes are free (a
		// transport still reading them holds its own reference).
		release(batch)
		p.m.queueLength.Set(float64(p.q.len()))
	}
}

// release gives the encoded bytes of a batch back to the pool.
func release(batch []item) {
	for _, it := range batch {
		it.release()
	}
}

// gather builds a batch starting with first: more queued scrapes until
// MaxPoints or MaxWait.
func (p *pipeline) gather(first item) ([]item, item, int) {
	batch, last, points := []item{first}, first, first.points
	if points >= p.cfg.batch.MaxPoints {
		return batch, last, points
	}
	ctx, cancel := context.WithTimeout(p.waitCtx, p.cfg.batch.MaxWait)
	defer cancel()
	for points < p.cfg.batch.MaxPoints {
		it, err := p.q.get(ctx)
		if err != nil {
			break
		}
		batch = append(batch, it)
		points += it.points
		last = it
	}
	return batch, last, points
}

// payload is a batch the way the client sends it: encoded scrapes (pdata
// ones marshalled) for an encodedClient, which sends them one after the
// other (repeated resource_metrics fields: encodings concatenate), else
// pdata (encoded ones decoded), merged.
func (p *pipeline) payload(batch []item) (any, error) {
	if _, ok := p.c.(encodedClient); ok {
		parts := make([]*buf, len(batch))
		for i, it := range batch {
			raw, err := it.encoded()
			if err != nil {
				return nil, err
			}
			parts[i] = raw
		}
		return parts, nil
	}
	md, err := batch[0].metrics()
	if err != nil {
		return nil, err
	}
	for _, it := range batch[1:] {
		m, err := it.metrics()
		if err != nil {
			return nil, err
		}
		m.ResourceMetrics().MoveAndAppendTo(md.ResourceMetrics())
	}
	return md, nil
}

// send hands a payload to the client.
func (p *pipeline) send(ctx context.Context, payload any) error {
	switch v := payload.(type) {
	case []*buf:
		return p.c.(encodedClient).sendEncoded(ctx, v)
	case pmetric.Metrics:
		return p.c.(metricsClient).send(ctx, v)
	}
	return permanent(fmt.Errorf("payload %T", payload), "marshal")
}

// deliver sends a batch, retrying what may pass, until it is sent or
// dropped for good (true), or the exporter is stopped (false).
func (p *pipeline) deliver(payload any, points int) bool {
	start := time.Now()
	wait := p.cfg.retry.InitialInterval
	for {
		ctx, cancel := context.WithTimeout(p.sendCtx, p.cfg.timeout)
		t0 := time.Now()
		err := p.send(ctx, payload)
		cancel()
		p.m.latency.Observe(time.Since(t0).Seconds())
		if err == nil {
			p.m.sentPoints.Add(float64(points))
			p.m.sentBatches.Inc()
			return true
		}
		if p.sendCtx.Err() != nil {
			return false
		}
		var se *sendError
		errors.As(err, &se)
		if se != nil && se.partial > 0 {
			// The backend kept the batch but refused part of it, for good.
			p.m.sentPoints.Add(float64(max(points-se.partial, 0)))
			p.m.sentBatches.Inc()
			p.m.dropped(reasonPartial, se.partial)
			p.drops.note(p.logger, reasonPartial, err)
			return true
		}
		p.m.failed.Inc()
		if se != nil && !se.retryable {
			p.m.dropped(se.reason, points)
			p.drops.note(p.logger, se.reason, err)
			return true
		}
		if limit := p.cfg.retry.MaxElapsed; limit > 0 && time.Since(start) > limit {
			p.m.dropped(reasonRetriesExhausted, points)
			p.drops.note(p.logger, reasonRetriesExhausted, err)
			return true
		}
		d := jitter(wait, p.cfg.retry.Jitter)
		if se != nil && se.retryAfter > d {
			d = se.retryAfter
		}
		p.logger.Debug("send failed, retrying", "err", err, "in", d)
		p.m.retried.Inc()
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-p.sendCtx.Done():
			t.Stop()
			return false
		}
		wait = min(2*wait, p.cfg.retry.MaxInterval)
	}
}

// dropRest counts what a stopped in-memory pipeline still holds.
func (p *pipeline) dropRest() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		it, err := p.q.get(ctx)
		if err != nil {
			return
		}
		p.m.dropped(reasonShutdown, it.points)
		_ = p.q.ack(it)
		it.release()
	}
}

func jitter(d time.Duration, f float64) time.Duration {
	if f <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + f*(2*rand.Float64()-1)))
}

// Drop reasons.
const (
	reasonQueueFull        = "queue_full"
	reasonShutdown         = "shutdown"
	reasonRetriesExhausted = "retries_exhausted"
	reasonPartial          = "rejected_by_backend"
)

// dropLog logs dropped data once per burst: the first drop, then nothing
// until a minute without drops has passed, then a summary with the count.
type dropLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const dropBurst = time.Minute

func (d *dropLog) note(logger *slog.Logger, reason string, err error) {
	d.mu.Lock()
	now := time.Now()
	quiet := now.Sub(d.last) > dropBurst
	d.last = now
	n := d.suppressed
	if quiet {
		d.suppressed = 0
	} else {
		d.suppressed++
	}
	d.mu.Unlock()
	if quiet {
		logger.Warn("dropping metrics", "reason", reason, "err", err, "dropped_since_last_log", n)
	}
}
