package scraper

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons the gate drops a scrape's samples (the reason label of
// allot_scraper_gate_dropped_total).
const (
	dropUnowned   = "unowned"    // the target is not (or no longer) ours
	dropSession   = "no_session" // the session is lost or not yet open
	dropPreparing = "preparing"  // a move to us has not taken over yet
	dropNoTarget  = "no_target"  // the batch names no target (never expected)
)

type metrics struct {
	targets     prometheus.Gauge
	catalog     prometheus.Gauge
	slots       prometheus.Gauge
	failovers   prometheus.Counter
	sessions    prometheus.Counter
	released    prometheus.Counter
	lost        *prometheus.CounterVec
	badJobs     prometheus.Counter
	movesIn     *prometheus.CounterVec
	gateDropped *prometheus.CounterVec
	collectors  []prometheus.Collector
}

// newMetrics registers the scraper's metrics on reg (already wrapped with
// the scraper's label by New). A nil reg registers nothing.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		targets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_scraper_targets",
			Help: "Targets this scraper owns.",
		}),
		catalog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_scraper_catalog_targets",
			Help: "Targets this scraper knows from the catalog (its followed slots and owned targets).",
		}),
		slots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "allot_scraper_followed_slots",
			Help: "Catalog slots this scraper follows (first or second choice).",
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_failovers_total",
			Help: "Targets this scraper claimed after another owner's claim vanished (lease expiry or revocation).",
		}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_scraper_sessions_total",
			Help: "etcd sessions this scraper opened (more than one means a session was lost).",
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_scraper_released_total",
			Help: "Claims this scraper released because their target left the catalog.",
		}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_scraper_targets_lost_total",
			Help: "Owned targets this scraper stopped because it lost them: session (lease lost), moved (claim taken over), deleted (claim deleted under it).",
		}, []string{"reason"}),
		badJobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_scraper_invalid_jobs_total",
			Help: "Job configs from the catalog that Prometheus rejected; their targets are not scraped.",
		}),
		movesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_scraper_moves_in_total",
			Help: "Moves of targets to this scraper, by result: done (taken over) or failed (the claim or the move changed, or it timed out).",
		}, []string{"result"}),
		gateDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allot_scraper_gate_dropped_total",
			Help: "Samples the ownership gate dropped instead of forwarding, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{dropUnowned, dropSession, dropPreparing, dropNoTarget} {
		m.gateDropped.WithLabelValues(r)
	}
	for _, r := range []string{"session", "moved", "deleted"} {
		m.lost.WithLabelValues(r)
	}
	for _, r := range []string{"done", "failed"} {
		m.movesIn.WithLabelValues(r)
	}
	m.collectors = []prometheus.Collector{m.targets, m.catalog, m.slots, m.failovers, m.sessions, m.released, m.lost, m.badJobs, m.movesIn, m.gateDropped}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register scraper metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}
