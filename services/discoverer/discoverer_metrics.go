package discoverer

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	targets             *prometheus.GaugeVec
	leader              prometheus.Gauge
	publishDuration     prometheus.Histogram
	publishFailures     prometheus.Counter
	reconciliations     prometheus.Counter
	reloadSuccessful    prometheus.Gauge
	reloadSuccessTime   prometheus.Gauge
	failedSDConfigs     prometheus.Gauge
	applyDuration       prometheus.Histogram
	publishedSinceStart prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		targets: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "allot_discoverer_targets",
			Help: "Targets of each job after relabelling: active ones are published, dropped ones are kept for debugging.",
		}, []string{"job", "state"}),
		leader: f.NewGauge(prometheus.GaugeOpts{
			Name: "allot_discoverer_leader",
			Help: "1 if this discoverer is the leader that publishes the catalog.",
		}),
		publishDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "allot_discoverer_publish_duration_seconds",
			Help:    "Time to publish one batch of catalog changes, including any reconciliation.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		publishFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "allot_discoverer_publish_failures_total",
			Help: "Publishes that failed; each is followed by a full reconciliation.",
		}),
		reconciliations: f.NewCounter(prometheus.CounterOpts{
			Name: "allot_discoverer_reconciliations_total",
			Help: "Full comparisons of the catalog with the buckets (on winning the election and after a publish failure).",
		}),
		reloadSuccessful: f.NewGauge(prometheus.GaugeOpts{
			Name: "allot_discoverer_config_last_reload_successful",
			Help: "Whether the last ApplyConfig succeeded.",
		}),
		reloadSuccessTime: f.NewGauge(prometheus.GaugeOpts{
			Name: "allot_discoverer_config_last_reload_success_timestamp_seconds",
			Help: "Time of the last successful ApplyConfig.",
		}),
		failedSDConfigs: f.NewGauge(prometheus.GaugeOpts{
			Name: "allot_discoverer_failed_sd_configs",
			Help: "SD configs of the current config that could not be started.",
		}),
		applyDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "allot_discoverer_apply_duration_seconds",
			Help:    "Time to relabel and diff one batch of target group updates.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
		}),
		publishedSinceStart: f.NewCounter(prometheus.CounterOpts{
			Name: "allot_discoverer_changes_published_total",
			Help: "Job and target puts and deletes this discoverer published.",
		}),
	}
}
