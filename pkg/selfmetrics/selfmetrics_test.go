package selfmetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterReusesExisting(t *testing.T) {
	reg := prometheus.NewRegistry()
	newCounter := func() prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "allot_test_total", Help: "test"})
	}
	a := Register(reg, newCounter())
	b := Register(reg, newCounter())
	b.Inc()
	if a != b {
		t.Fatal("second registration did not return the first collector")
	}
	if c := Register[prometheus.Counter](nil, newCounter()); c == nil {
		t.Fatal("nil registerer returned nil")
	}
}
