package promcr

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	resources *prometheus.GaugeVec
	skipped   *prometheus.CounterVec
	jobs      prometheus.Gauge
	updates   prometheus.Counter
	failures  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		resources: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "allot_promcr_resources",
			Help: "Selected Prometheus Operator resources, by kind and state (valid: yields jobs; skipped: invalid, see the log).",
		}, []string{"kind", "state"})),
		skipped: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_promcr_skipped_total",
			Help: "Resources that became skipped (counted once per resource version and reason), by kind and reason (decode, invalid, secret, scrape_class, unsupported, file_access).",
		}, []string{"kind", "reason"})),
		jobs: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_promcr_jobs",
			Help: "Scrape jobs generated from Prometheus Operator resources.",
		})),
		updates: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_promcr_config_updates_total",
			Help: "Generated scrape configs handed to the discoverer (only when they changed).",
		})),
		failures: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_promcr_generation_failures_total",
			Help: "Generations discarded because the Kubernetes API failed to answer a secret or configmap read; the previous configs stay.",
		})),
	}
}

// register registers c, or returns the collector already registered under
// the same description (a watcher rebuilt on reload shares the metrics).
// Other registration errors leave c unregistered: metrics must never stop
// discovery.
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
