package export

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the self-metrics of all exporters on one registry, labelled
// by exporter name.
type metrics struct {
	sentPoints    *prometheus.CounterVec
	sentBatches   *prometheus.CounterVec
	failed        *prometheus.CounterVec
	retried       *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	queueLength   *prometheus.GaugeVec
	queueCapacity *prometheus.GaugeVec
	latency       *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sentPoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_export_sent_points_total",
			Help: "Data points the backend accepted.",
		}, []string{"exporter"}),
		sentBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_export_sent_requests_total",
			Help: "Requests the backend accepted.",
		}, []string{"exporter"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_export_failed_requests_total",
			Help: "Requests that failed (each attempt).",
		}, []string{"exporter"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_export_retried_requests_total",
			Help: "Failed requests that were tried again.",
		}, []string{"exporter"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_export_dropped_points_total",
			Help: "Data points given up on, by reason (queue_full, http_<status>, grpc_<code>, retries_exhausted, shutdown, ...).",
		}, []string{"exporter", "reason"}),
		queueLength: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "allot_export_queue_length",
			Help: "Scrapes queued for sending.",
		}, []string{"exporter"}),
		queueCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "allot_export_queue_capacity",
			Help: "Scrapes the queue holds at most.",
		}, []string{"exporter"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                        "allot_export_send_duration_seconds",
			Help:                        "Duration of send requests, successful or not.",
			Buckets:                     prometheus.ExponentialBuckets(0.001, 4, 8),
			NativeHistogramBucketFactor: 1.1,
		}, []string{"exporter"}),
	}
	if reg != nil {
		m.sentPoints = register(reg, m.sentPoints)
		m.sentBatches = register(reg, m.sentBatches)
		m.failed = register(reg, m.failed)
		m.retried = register(reg, m.retried)
		m.dropped = register(reg, m.dropped)
		m.queueLength = register(reg, m.queueLength)
		m.queueCapacity = register(reg, m.queueCapacity)
		m.latency = register(reg, m.latency)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name, so that exporters built one by one share the vectors.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// exporterMetrics are the metrics of one exporter.
type exporterMetrics struct {
	name          string
	m             *metrics
	sentPoints    prometheus.Counter
	sentBatches   prometheus.Counter
	failed        prometheus.Counter
	retried       prometheus.Counter
	queueLength   prometheus.Gauge
	queueCapacity prometheus.Gauge
	latency       prometheus.Observer
}

func (m *metrics) forExporter(name string) *exporterMetrics {
	return &exporterMetrics{
		name:          name,
		m:             m,
		sentPoints:    m.sentPoints.WithLabelValues(name),
		sentBatches:   m.sentBatches.WithLabelValues(name),
		failed:        m.failed.WithLabelValues(name),
		retried:       m.retried.WithLabelValues(name),
		queueLength:   m.queueLength.WithLabelValues(name),
		queueCapacity: m.queueCapacity.WithLabelValues(name),
		latency:       m.latency.WithLabelValues(name),
	}
}

func (e *exporterMetrics) dropped(reason string, points int) {
	e.m.dropped.WithLabelValues(e.name, reason).Add(float64(points))
}
