package leases

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/pkg/selfmetrics"
)

type sessionMetrics struct {
	keepaliveFailures prometheus.Counter
	lost              prometheus.Counter
	deadlines         *deadlineCollector
}

func newSessionMetrics(reg prometheus.Registerer) *sessionMetrics {
	return &sessionMetrics{
		keepaliveFailures: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_leases_keepalive_failures_total",
			Help: "Lease renewals that failed (the session retries until its local deadline).",
		})),
		lost: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_leases_lost_total",
			Help: "Sessions lost because their local deadline passed or the server no longer knew the lease.",
		})),
		deadlines: selfmetrics.Register(reg, newDeadlineCollector()),
	}
}

// deadlineCollector reports allot_lease_deadline_seconds, the time left
// before the local deadline of the live session closest to losing its lease
// (the one that matters for alerting); nothing while no session is live.
type deadlineCollector struct {
	desc *prometheus.Desc

	mu       sync.Mutex
	sessions map[*Session]struct{}
}

func newDeadlineCollector() *deadlineCollector {
	return &deadlineCollector{
		desc: prometheus.NewDesc("allot_lease_deadline_seconds",
			"Seconds left before the local deadline of the live session closest to it.", nil, nil),
		sessions: map[*Session]struct{}{},
	}
}

func (d *deadlineCollector) add(s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sessions[s] = struct{}{}
}

func (d *deadlineCollector) remove(s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.sessions, s)
}

func (d *deadlineCollector) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

func (d *deadlineCollector) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	var first time.Time
	for s := range d.sessions {
		if dl := s.Deadline(); first.IsZero() || dl.Before(first) {
			first = dl
		}
	}
	d.mu.Unlock()
	if first.IsZero() {
		return
	}
	ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, time.Until(first).Seconds())
}
