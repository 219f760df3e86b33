package targetallocator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/pkg/selfmetrics"
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
		requests: selfmetrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_target_allocator_requests_total",
			Help: "Requests to the Target Allocator API by handler (scrape_configs, jobs, targets) and status code.",
		}, []string{"handler", "code"})),
		collectors: selfmetrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_target_allocator_collectors",
			Help: "Collectors polling this process, each holding a lease.",
		})),
		registered: selfmetrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_target_allocator_registrations_total",
			Help: "Collectors registered on their first poll, by result (ok, error).",
		}, []string{"result"})),
		expired: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_collectors_expired_total",
			Help: "Collectors whose polls stopped for the collector TTL; their leases were revoked and their targets released.",
		})),
		lost: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_collector_leases_lost_total",
			Help: "Collector leases lost (etcd unreachable past the lease deadline).",
		})),
		claimed: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_claims_total",
			Help: "Targets claimed for collectors.",
		})),
		released: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_target_allocator_releases_total",
			Help: "Claims of collectors released because their target left the catalog.",
		})),
		takeovers: selfmetrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_target_allocator_takeovers_total",
			Help: "Moves to collectors taken over on their behalf, by result (completed, stale, failed).",
		}, []string{"result"})),
		roundDuration: selfmetrics.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "allot_target_allocator_reconcile_duration_seconds",
			Help:    "One reconcile round: placing unowned targets, taking moves over, releasing removed targets.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		})),
		invalidJobs: selfmetrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
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
