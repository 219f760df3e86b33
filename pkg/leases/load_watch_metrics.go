package leases

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/pkg/selfmetrics"
)

// loadWatchMetrics count what a LoadWatch reads from etcd: what ListLoads
// would read every time, a LoadWatch reads once and then only as it changes.
type loadWatchMetrics struct {
	keys, bytes prometheus.Counter
}

func newLoadWatchMetrics(reg prometheus.Registerer) *loadWatchMetrics {
	return &loadWatchMetrics{
		keys: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_leases_load_watch_read_keys_total",
			Help: "Load report keys (totals and chunks) read by load watches, by listing or watch event.",
		})),
		bytes: selfmetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allot_leases_load_watch_read_bytes_total",
			Help: "Bytes of load report keys and values read by load watches, by listing or watch event.",
		})),
	}
}
