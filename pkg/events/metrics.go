package events

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	bucketJobs    = "jobs"
	bucketTargets = "targets"

	opPut    = "put"
	opDelete = "delete"
	opPurge  = "purge"
)

type publisherMetrics struct {
	published *prometheus.CounterVec
}

func newPublisherMetrics(reg prometheus.Registerer) *publisherMetrics {
	return &publisherMetrics{
		published: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_events_published_total",
			Help: "Catalog changes acknowledged by JetStream, by bucket (jobs, targets) and op (put, delete).",
		}, []string{"bucket", "op"})),
	}
}

type followerMetrics struct {
	received      *prometheus.CounterVec
	receivedBytes *prometheus.CounterVec
	invalid       *prometheus.CounterVec
	lag           prometheus.Histogram
	followedSlots prometheus.Gauge
	restarts      *prometheus.CounterVec
}

func newFollowerMetrics(reg prometheus.Registerer) *followerMetrics {
	return &followerMetrics{
		received: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_events_received_total",
			Help: "Catalog entries received by followers, snapshots included, by bucket and op (put, delete, purge).",
		}, []string{"bucket", "op"})),
		receivedBytes: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_events_received_bytes_total",
			Help: "Value bytes of the catalog entries received by followers, by bucket.",
		}, []string{"bucket"})),
		invalid: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_events_invalid_total",
			Help: "Catalog entries that failed validation and were skipped, by bucket and reason.",
		}, []string{"bucket", "reason"})),
		lag: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "allot_events_lag_seconds",
			Help:    "Time from a catalog change being stored to a follower receiving it (live changes only, not snapshots).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		})),
		followedSlots: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_events_followed_slots",
			Help: "Target slots followed, summed over the followers of this process.",
		})),
		restarts: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_events_watch_restarts_total",
			Help: "Watches (re)started by followers, by bucket and reason (filter, reconnect, closed, retry).",
		}, []string{"bucket", "reason"})),
	}
}

// register registers c, or returns the collector already registered under
// the same description. Several followers share one registry in `allot all`;
// they then share the counters, and the followed-slots gauge is kept with
// Add/Sub so that it sums over them. Other registration errors leave c
// unregistered: metrics must never stop the catalog from working.
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
