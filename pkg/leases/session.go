package leases

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	// ErrLeaseLost means the session's local deadline passed without a newer
	// successful renewal, or the server said the lease is gone. Everything
	// held on the lease must be treated as lost at once.
	ErrLeaseLost = errors.New("leases: lease lost")
	// ErrNotOwner means a claim changed hands (its epoch is not the one the
	// caller holds) or the caller is not the party the operation is for.
	ErrNotOwner = errors.New("leases: not the owner")
	// ErrSessionClosed is what [Session.Err] returns after Close or Orphan.
	ErrSessionClosed = errors.New("leases: session closed")
)

const (
	// DefaultTTL is the lease TTL unless configured.
	DefaultTTL = 5 * time.Second
	// MinTTL is the shortest lease allowed: etcd counts TTLs in whole seconds
	// and raises anything shorter than about 1.5 election timeouts anyway.
	MinTTL = 2 * time.Second
)

// SessionConfig configures a [Session].
type SessionConfig struct {
	// TTL of the lease, rounded up to whole seconds. Zero means DefaultTTL.
	TTL time.Duration `yaml:"ttl"`
	// Margin is how long before the earliest possible server-side expiry the
	// session gives up: local deadline = send time of the last successful
	// renewal + TTL - Margin. Zero means TTL/5.
	Margin time.Duration `yaml:"margin"`
}

// RegisterFlags adds --lease.ttl and --lease.margin to f.
func (c *SessionConfig) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.TTL, "lease.ttl", DefaultTTL,
		"TTL of a process's etcd lease (whole seconds, at least 2s); a crashed process's targets are freed after this long.")
	f.DurationVar(&c.Margin, "lease.margin", 0,
		"How long before the lease could expire on the server a process stops using it (0 means TTL/5).")
}

// Validate reports a configuration that cannot be used.
func (c SessionConfig) Validate() error {
	if c.TTL < 0 {
		return fmt.Errorf("lease.ttl %s is negative", c.TTL)
	}
	if c.TTL != 0 && c.TTL < MinTTL {
		return fmt.Errorf("lease.ttl %s is shorter than %s", c.TTL, MinTTL)
	}
	if c.Margin < 0 {
		return fmt.Errorf("lease.margin %s is negative", c.Margin)
	}
	if ttl := c.ttl(); c.Margin > ttl/2 {
		return fmt.Errorf("lease.margin %s is more than half of lease.ttl %s", c.Margin, ttl)
	}
	return nil
}

// ttl is the effective TTL: the default, rounded up to whole seconds.
func (c SessionConfig) ttl() time.Duration {
	t := c.TTL
	if t == 0 {
		t = DefaultTTL
	}
	if t < MinTTL {
		t = MinTTL
	}
	return (t + time.Second - 1).Truncate(time.Second)
}

func (c SessionConfig) margin() time.Duration {
	if c.Margin == 0 {
		return c.ttl() / 5
	}
	return c.Margin
}

// renewFunc renews a lease once. It is clientv3's KeepAliveOnce except in
// tests, which swap in failing versions to simulate a partition.
type renewFunc func(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error)

// Session is one etcd lease that its owner renews itself, so that it knows
// at every moment a local deadline before which the server cannot have
// expired the lease. One process role (a scraper, a rebalancer candidate)
// holds one Session; everything it writes lives on the session's lease.
//
// The renewal goroutine is started by NewSession and ends when the session
// is lost, closed or orphaned, or when the context given to NewSession ends.
// A lost session is not revived: open a new one.
type Session struct {
	cli      *clientv3.Client
	id       clientv3.LeaseID
	ttl      time.Duration
	margin   time.Duration
	interval time.Duration
	retry    time.Duration
	attempt  time.Duration // bound on one renewal attempt
	logger   *slog.Logger
	metrics  *sessionMetrics
	renew    atomic.Pointer[renewFunc]

	mu       sync.Mutex
	deadline time.Time
	err      error

	cancel  context.CancelCauseFunc
	alive   context.Context // cancelled with Err as its cause when the session ends
	kill    context.CancelCauseFunc
	done    chan struct{} // closed when err is set
	stopped chan struct{} // closed when the renewal goroutine has returned

	// loadWritten is what PutLoad last wrote per chunk key on this lease,
	// so unchanged chunks are not rewritten.
	loadMu      sync.Mutex
	loadWritten map[string]string
}

// NewSession grants a lease and starts renewing it with KeepAliveOnce every
// TTL/3 (more often if Margin is large), remembering when each successful
// renewal was sent. It does not use clientv3's KeepAlive, which cannot say
// when a renewal was sent.
//
// ctx bounds the grant AND the session's whole life: when it ends, renewal
// stops without revoking the lease (as Orphan does) and Err returns ctx's
// error. Do not pass a context with a timeout meant only for the grant.
// reg may be nil; several sessions may share one registry.
func NewSession(ctx context.Context, cli *clientv3.Client, cfg SessionConfig, logger *slog.Logger, reg prometheus.Registerer) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("session config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ttl, margin := cfg.ttl(), cfg.margin()
	sent := time.Now()
	resp, err := cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	s := &Session{
		cli:      cli,
		id:       resp.ID,
		ttl:      ttl,
		margin:   margin,
		interval: min(ttl/3, (ttl-margin)/2),
		logger:   logger.With("lease", fmt.Sprintf("%x", int64(resp.ID))),
		metrics:  newSessionMetrics(reg),
		deadline: sent.Add(ttl - margin),
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	// Retries after a failed renewal come quicker than regular renewals so
	// that a short hiccup costs no more than a fraction of the margin.
	s.retry = max(s.interval/4, 50*time.Millisecond)
	s.attempt = max(s.interval/2, 100*time.Millisecond)
	s.alive, s.kill = context.WithCancelCause(context.Background())
	renew := renewFunc(cli.KeepAliveOnce)
	s.renew.Store(&renew)
	s.metrics.deadlines.add(s)

	lctx, cancel := context.WithCancelCause(ctx)
	s.cancel = cancel
	go s.run(lctx)
	s.logger.Debug("session started", "ttl", ttl, "margin", margin)
	return s, nil
}

// Lease is the session's lease ID.
func (s *Session) Lease() clientv3.LeaseID { return s.id }

// Client is the etcd client the session was made with.
func (s *Session) Client() *clientv3.Client { return s.cli }

// TTL is the lease's TTL as granted (whole seconds).
func (s *Session) TTL() time.Duration { return s.ttl }

// Deadline is the current local deadline: the send time of the last
// successful renewal + TTL - Margin. The server cannot expire the lease
// before deadline + Margin.
func (s *Session) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline
}

// Done is closed when the session ends: lost, closed, orphaned, or its
// context ended. Err says which.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is nil while the session is alive, ErrLeaseLost after it was lost,
// ErrSessionClosed after Close or Orphan, and the context's error if the
// context given to NewSession ended first.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Orphan stops renewing without revoking: the lease expires on the server
// after at most TTL. It is what a crash looks like to everyone else, and
// what to do when the connection's state is unknown.
func (s *Session) Orphan() {
	s.cancel(ErrSessionClosed)
	<-s.stopped
}

// Close stops renewing and revokes the lease, so etcd deletes every key on
// it at once and others can take over immediately. Revoking gives up after
// TTL: by then the lease has expired anyway. Revoking a lease that is
// already gone is not an error.
func (s *Session) Close() error {
	s.Orphan()
	ctx, cancel := context.WithTimeout(context.Background(), s.ttl)
	defer cancel()
	if _, err := s.cli.Revoke(ctx, s.id); err != nil && !isLeaseNotFound(err) {
		return fmt.Errorf("revoke lease %x: %w", int64(s.id), err)
	}
	return nil
}

// end records why the session ended and closes Done; the first reason wins.
func (s *Session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	s.kill(err)
	close(s.done)
}

// Ctx is cancelled when the session ends, with Err as its cause
// (context.Cause). Work that must stop with the session can use it.
func (s *Session) Ctx() context.Context { return s.alive }

// bind returns a context that ends when ctx or the session does.
func (s *Session) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.alive, func() { cancel(context.Cause(s.alive)) })
	return cctx, func() {
		stop()
		cancel(nil)
	}
}

// extend moves the deadline forward (never back: renewals may complete out
// of the order they were sent in only across retries, but be safe).
func (s *Session) extend(d time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.After(s.deadline) {
		s.deadline = d
	}
	return s.deadline
}

type renewal struct {
	sent time.Time
	resp *clientv3.LeaseKeepAliveResponse
	err  error
}

// run renews the lease and ends the session when the local deadline passes.
// Renewals run in a helper goroutine so that a renewal stuck in a partition
// cannot delay noticing the deadline.
func (s *Session) run(ctx context.Context) {
	defer close(s.stopped)
	defer s.metrics.deadlines.remove(s)
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel() // runs before wg.Wait, so an in-flight renewal returns

	results := make(chan renewal, 1)
	next := time.NewTimer(s.interval)
	defer next.Stop()
	lost := time.NewTimer(time.Until(s.Deadline()))
	defer lost.Stop()
	failures := 0
	inflight := false

	for {
		select {
		case <-ctx.Done():
			s.end(context.Cause(ctx))
			s.logger.Debug("session ended", "reason", context.Cause(ctx))
			return

		case <-lost.C:
			if inflight { // it cannot succeed in time any more
				failures++
				s.metrics.keepaliveFailures.Inc()
			}
			s.lose("local deadline passed", "failed_renewals", failures)
			return

		case <-next.C:
			dl := s.Deadline()
			renew := *s.renew.Load()
			inflight = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				// No point waiting past the deadline: the session is lost then.
				// Nor past one attempt's bound: a renewal sent to a member
				// that lost its leader waits for an election that may
				// already have ended elsewhere, and only a fresh attempt
				// can reach the new leader in time.
				sent := time.Now()
				cctx, cancel := context.WithDeadline(rctx, earliest(dl, sent.Add(s.attempt)))
				defer cancel()
				resp, err := renew(cctx, s.id)
				if err == nil && resp.TTL <= 0 {
					err = rpctypes.ErrLeaseNotFound
				}
				results <- renewal{sent: sent, resp: resp, err: err}
			}()

		case r := <-results:
			inflight = false
			switch {
			case r.err == nil:
				failures = 0
				dl := s.extend(r.sent.Add(s.ttl - s.margin))
				lost.Reset(time.Until(dl))
				next.Reset(max(time.Until(r.sent.Add(s.interval)), 0))
			case isLeaseNotFound(r.err):
				s.lose("lease not found on server")
				return
			default:
				failures++
				s.metrics.keepaliveFailures.Inc()
				s.logger.Warn("lease renewal failed", "err", r.err, "failures", failures,
					"time_left", time.Until(s.Deadline()).Round(time.Millisecond))
				// An attempt that timed out already waited long enough.
				wait := s.retry
				if errors.Is(r.err, context.DeadlineExceeded) {
					wait = 0
				}
				next.Reset(wait)
			}
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (s *Session) lose(why string, attrs ...any) {
	s.end(ErrLeaseLost)
	s.metrics.lost.Inc()
	s.logger.Warn("session lost: "+why, attrs...)
}

// setRenew swaps the renewal function; tests use it to cut the session off.
func (s *Session) setRenew(f renewFunc) { s.renew.Store(&f) }

func isLeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound)
}
