// Package selfmetrics holds what allot's components share about their own
// Prometheus metrics.
package selfmetrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns it; if reg already holds an
// equal collector (several components of one kind in one process, as in
// `allot all`), that one is returned so all of them update the same series.
// A nil reg means metrics are not collected; c is returned unregistered.
// Other registration errors (a clash of help or labels) leave c
// unregistered: a component never fails for its metrics.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
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
