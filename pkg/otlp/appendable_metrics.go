package otlp

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type appendableMetrics struct {
	commits       prometheus.Counter
	rollbacks     prometheus.Counter
	points        prometheus.Counter
	consumeErrors prometheus.Counter
	targets       prometheus.Gauge
}

func newAppendableMetrics(reg prometheus.Registerer) *appendableMetrics {
	f := promauto.With(reg)
	return &appendableMetrics{
		commits: f.NewCounter(prometheus.CounterOpts{
			Name: "allot_otlp_scrapes_committed_total",
			Help: "Scrapes converted to OTLP and handed to the exporter.",
		}),
		rollbacks: f.NewCounter(prometheus.CounterOpts{
			Name: "allot_otlp_scrapes_rolled_back_total",
			Help: "Scrapes dropped by the scrape loop before conversion (failed scrapes, limits).",
		}),
		points: f.NewCounter(prometheus.CounterOpts{
			Name: "allot_otlp_data_points_total",
			Help: "OTLP data points produced.",
		}),
		consumeErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "allot_otlp_consume_errors_total",
			Help: "Converted scrapes the exporter refused (the scrape's commit failed).",
		}),
		targets: f.NewGauge(prometheus.GaugeOpts{
			Name: "allot_otlp_targets",
			Help: "Targets with conversion state (start timestamps) held.",
		}),
	}
}
