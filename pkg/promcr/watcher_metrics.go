package promcr

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/pkg/selfmetrics"
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
		resources: selfmetrics.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "allot_promcr_resources",
			Help: "Selected Prometheus Operator resources, by kind and state (valid: yields jobs; skipped: invalid, see the log).",
		}, []string{"kind", "state"})),
		skipped: selfmetrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_promcr_skipped_total",
			Help: "Resources that became skipped (counted once per resource version and reason), by kind and reason (decode, invalid, secret, scrape_class, unsupported, file_access).",
		}, []string{"kind", "reason"})),
		jobs: selfmetrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_promcr_jobs",
			Help: "Scrape jobs generated from Prometheus Operator resources.",
		})),
		updates: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_promcr_config_updates_total",
			Help: "Generated scrape configs handed to the discoverer (only when they changed).",
		})),
		failures: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_promcr_generation_failures_total",
			Help: "Generations discarded because the Kubernetes API failed to answer a secret or configmap read; the previous configs stay.",
		})),
	}
}
