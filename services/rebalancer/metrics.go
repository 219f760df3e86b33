package rebalancer

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Move outcomes, the outcome label of allot_moves_total and of a
// [MoveRecord].
const (
	// OutcomeCompleted: the destination took the claim over.
	OutcomeCompleted = "completed"
	// OutcomeTimeout: the destination did not take over before the deadline;
	// the move was aborted and the target stayed with its source.
	OutcomeTimeout = "timeout"
	// OutcomeStale: the claim changed hands (released, expired, moved) or the
	// destination left while the move was pending; the move was aborted.
	OutcomeStale = "stale"
	// OutcomeRejected: the move could not be started because the source no
	// longer held the claim at the planned epoch.
	OutcomeRejected = "rejected"
	// OutcomeFailed: starting or aborting the move failed (etcd error).
	OutcomeFailed = "failed"
	// OutcomeVanished: the move key disappeared without a takeover and not by
	// this rebalancer's hand, e.g. the lease of the leader that wrote it
	// expired.
	OutcomeVanished = "vanished"
	// OutcomeAbandoned: this rebalancer stopped leading while the move was
	// pending; the move dies with its lease.
	OutcomeAbandoned = "abandoned"
)

type metrics struct {
	regs []prometheus.Collector
	reg  prometheus.Registerer

	balanceRatio        prometheus.Gauge
	balanceRatioByCount prometheus.Gauge
	recommended         prometheus.Gauge
	leader              prometheus.Gauge
	moves               *prometheus.CounterVec
	moveDuration        prometheus.Histogram
	pending             prometheus.Gauge
	plans               prometheus.Counter
	evaluations         prometheus.Counter
}

// newMetrics builds the rebalancer's metrics and registers them with reg
// (nil is fine). A registration error is returned: two rebalancers in one
// process need wrapped registerers.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		balanceRatio: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_balance_ratio",
			Help: "Busiest scraper's series divided by the mean (weighted), as last measured by the rebalancer leader.",
		}),
		balanceRatioByCount: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_balance_ratio_by_count",
			Help: "Busiest scraper's target count divided by the mean (weighted), as last measured by the rebalancer leader.",
		}),
		recommended: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_recommended_scrapers",
			Help: "Number of scrapers the rebalancer leader recommends for the current series count (for autoscalers).",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_rebalancer_leader",
			Help: "1 while this rebalancer is the leader, else 0. Join the other allot_balance_* gauges on it.",
		}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_moves_total",
			Help: "Moves by reason (why planned) and outcome (completed, timeout, stale, rejected, failed, vanished, abandoned).",
		}, []string{"reason", "outcome"}),
		moveDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "allot_move_duration_seconds",
			Help:    "Time from starting a move to the destination's takeover, for completed moves.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12), // 5ms .. ~10s
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_moves_pending",
			Help: "Moves started and not yet finished.",
		}),
		plans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_rebalancer_plans_total",
			Help: "Plans with at least one move (made when the cluster was out of balance or a scraper draining).",
		}),
		evaluations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_rebalancer_evaluations_total",
			Help: "Evaluations of the cluster by the leader.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.balanceRatio, m.balanceRatioByCount, m.recommended, m.leader,
		m.moves, m.moveDuration, m.pending, m.plans, m.evaluations,
	} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return nil, fmt.Errorf("register rebalancer metrics: %w", err)
		}
		m.regs = append(m.regs, c)
	}
	return m, nil
}

// unregister removes every metric registered by newMetrics.
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.regs {
		m.reg.Unregister(c)
	}
	m.regs = nil
}
