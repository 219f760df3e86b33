package leases

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/pkg/selfmetrics"
)

type claimMetrics struct {
	won, taken, errors prometheus.Counter
	txnDuration        prometheus.Observer
}

func newClaimMetrics(reg prometheus.Registerer) *claimMetrics {
	total := selfmetrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "allot_claims_total",
		Help: "Targets this process tried to claim, by result: won, taken (someone else owns it) or error.",
	}, []string{"result"}))
	txn := selfmetrics.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "allot_claim_txn_duration_seconds",
		Help:    "Duration of one claim or release transaction (one batch).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5ms … 16s
	}))
	return &claimMetrics{
		won:         total.WithLabelValues("won"),
		taken:       total.WithLabelValues("taken"),
		errors:      total.WithLabelValues("error"),
		txnDuration: txn,
	}
}
