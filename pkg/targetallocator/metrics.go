package targetallocator

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec
	collectors    prometheus.Gauge
	registered    *prometheus.CounterVec
	expired       prometheus.Counter
	lost          prometheus.Counter
	claimed       prometheus.Counter
	released      prometheus.Counter
	takeovers     *prometheus.CounterVec
	roundDuration prometheus.Histogram
	invalidJobs   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_target_allocator_requests_total",
			Help: "Requests to the Target Allocator API by handler (scrape_configs, jobs, targets) and status code.",
		}, []string{"handler", "code"})),
		collectors: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_target_allocator_collectors",
			Help: "Collectors polling this process, each holding a lease.",
		})),
		registered: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_target_allocator_registrations_total",
			Help: "Collectors registered on their first poll, by result (ok, error).",
		}, []string{"result"})),
		expired: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_collectors_expired_total",
			Help: "Collectors whose polls stopped for the collector TTL; their leases were revoked and their targets released.",
		})),
		lost: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_collector_leases_lost_total",
			Help: "Collector leases lost (etcd unreachable past the lease deadline).",
		})),
		claimed: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_claims_total",
			Help: "Targets claimed for collectors.",
		})),
		released: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_releases_total",
			Help: "Claims of collectors released because their target left the catalog.",
		})),
		takeovers: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_target_allocator_takeovers_total",
			Help: "Moves to collectors taken over on their behalf, by result (completed, stale, failed).",
		}, []string{"result"})),
		roundDuration: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "allot_target_allocator_reconcile_duration_seconds",
			Help:    "One reconcile round: placing unowned targets, taking moves over, releasing removed targets.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		})),
		invalidJobs: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_target_allocator_invalid_job_configs",
			Help: "Jobs whose published config could not be converted at the last change (their previous config, if any, is still served).",
		})),
	}
}

func (m *metrics) registrations(err error) prometheus.Counter {
	if err != nil {
		return m.registered.WithLabelValues("error")
	}
	return m.registered.WithLabelValues("ok")
}

// register registers c, or returns the collector already registered under
// the same description (several APIs in one process, as in tests). Other
// errors leave c unregistered: metrics must never stop the API.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
