package discoverer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
)

// tap takes target group updates straight from the SD providers that
// discovery.Manager runs.
//
// The Manager hands its consumer the full set of groups of every job on
// every update (allGroups), which would make one change cost O(catalog).
// Instead every SD config of a job is wrapped in a [tapConfig] whose
// discoverer reports each update here, tagged with its job and provider,
// and never to the Manager. The Manager still does what it is good at:
// keeping providers whose config is unchanged across reloads, stopping
// obsolete ones and waiting for them, and the SD metrics. Its own target
// bookkeeping stays empty (prometheus_sd_discovered_targets reads 0; see
// allot_discoverer_targets instead).
type tap struct {
	mu      sync.Mutex
	nextID  uint64
	pending []update
	// trigger has one slot: any number of updates between two applies
	// cost one wake-up.
	trigger chan struct{}
	// failed collects SD configs that could not be started during one
	// ApplyConfig.
	failed []error
	// awaiting holds providers that have not had an update applied yet:
	// until they have, their job's targets are incomplete.
	awaiting map[uint64]awaited
}

type awaited struct {
	job   string
	since time.Time
}

func newTap() *tap {
	return &tap{trigger: make(chan struct{}, 1), awaiting: map[uint64]awaited{}}
}

// report queues an update and wakes the applier.
func (t *tap) report(u update) {
	t.mu.Lock()
	if u.ended {
		delete(t.awaiting, u.provider)
		// Anything still queued from this provider is moot.
		kept := t.pending[:0]
		for _, p := range t.pending {
			if p.provider != u.provider {
				kept = append(kept, p)
			}
		}
		clear(t.pending[len(kept):])
		t.pending = kept
	}
	t.pending = append(t.pending, u)
	t.mu.Unlock()
	select {
	case t.trigger <- struct{}{}:
	default:
	}
}

// take returns and forgets the queued updates, oldest first.
func (t *tap) take() []update {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending
	t.pending = nil
	return p
}

func (t *tap) newProvider(job string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nextID++
	t.awaiting[t.nextID] = awaited{job: job, since: time.Now()}
	return t.nextID
}

// applied records that these updates are in the catalog: their providers
// are no longer awaited.
func (t *tap) applied(ups []update) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, u := range ups {
		delete(t.awaiting, u.provider)
	}
}

// awaitingJob reports whether a provider of job created less than timeout
// ago has not been heard from yet.
func (t *tap) awaitingJob(job string, now time.Time, timeout time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.awaiting {
		if a.job == job && now.Sub(a.since) < timeout {
			return true
		}
	}
	return false
}

// awaitingAny reports whether any provider created less than timeout ago
// has not been heard from yet.
func (t *tap) awaitingAny(now time.Time, timeout time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.awaiting {
		if now.Sub(a.since) < timeout {
			return true
		}
	}
	return false
}

func (t *tap) recordFailure(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = append(t.failed, err)
}

func (t *tap) takeFailures() []error {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.failed
	t.failed = nil
	return f
}

// tapConfig wraps one SD config of one job. The job is part of the value,
// so discovery.Manager (which compares configs with reflect.DeepEqual)
// keeps a provider across reloads exactly when the job and its SD config
// are unchanged, and never shares one provider between two jobs.
type tapConfig struct {
	job   string
	inner discovery.Config
	tap   *tap
}

func (c tapConfig) Name() string { return c.inner.Name() }

func (c tapConfig) NewDiscovererMetrics(reg prometheus.Registerer, rmi discovery.RefreshMetricsInstantiator) discovery.DiscovererMetrics {
	return c.inner.NewDiscovererMetrics(reg, rmi)
}

func (c tapConfig) NewDiscoverer(opts discovery.DiscovererOptions) (discovery.Discoverer, error) {
	d, err := c.inner.NewDiscoverer(opts)
	if err != nil {
		err = fmt.Errorf("job %q: %s_sd_configs: %w", c.job, c.inner.Name(), err)
		c.tap.recordFailure(err)
		return nil, err
	}
	return &tapDiscoverer{job: c.job, id: c.tap.newProvider(c.job), inner: d, tap: c.tap}, nil
}

// tapDiscoverer runs an SD discoverer and reports its updates to the tap.
type tapDiscoverer struct {
	job   string
	id    uint64
	inner discovery.Discoverer
	tap   *tap
}

// Run reports every update of the inner discoverer, and when ctx ends,
// waits for it to return and reports the provider's end. It never writes
// to up: the Manager keeps no targets (see [tap]).
func (d *tapDiscoverer) Run(ctx context.Context, _ chan<- []*targetgroup.Group) {
	ch := make(chan []*targetgroup.Group)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.inner.Run(ctx, ch)
	}()
	defer d.tap.report(update{job: d.job, provider: d.id, ended: true})
	for {
		select {
		case tgs, ok := <-ch:
			if !ok {
				// The static discoverer closes its channel (against the
				// Discoverer contract); the provider lives on.
				ch = nil
				continue
			}
			d.tap.report(update{job: d.job, provider: d.id, groups: tgs})
		case <-ctx.Done():
			// Drain until the discoverer returns, in case it sends
			// without watching ctx.
			for {
				select {
				case <-done:
					return
				case _, ok := <-ch:
					if !ok {
						ch = nil
					}
				}
			}
		}
	}
}
