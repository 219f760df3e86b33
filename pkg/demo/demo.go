// Package demo serves realistic Prometheus targets for `allot all` and
// `allot demo`: each target looks like a small HTTP service, with request
// counters, latency histograms, a summary, queue gauges and build info, a
// few hundred series in all, whose values move on every scrape.
package demo

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	handlers = []string{"/", "/api/orders", "/api/users", "/api/search", "/healthz"}
	methods  = []string{"GET", "POST", "PUT"}
	codes    = []string{"200", "201", "404", "500"}
)

// Target is one simulated service. It is safe for concurrent scrapes.
type Target struct {
	Name    string
	reg     *prometheus.Registry
	handler http.Handler

	mu       sync.Mutex
	rng      *rand.Rand
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	payload  *prometheus.SummaryVec
	queue    *prometheus.GaugeVec
	inflight prometheus.Gauge
	temp     *prometheus.GaugeVec
}

// NewTarget builds target number i. The same i always yields the same
// label values and the same sequence of values, which keeps demos and tests
// reproducible.
func NewTarget(i int) *Target {
	t := &Target{
		Name: fmt.Sprintf("demo-%d", i),
		reg:  prometheus.NewRegistry(),
		rng:  rand.New(rand.NewPCG(uint64(i), 42)),
	}
	t.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total", Help: "Requests handled, by handler, method and status code.",
	}, []string{"handler", "method", "code"})
	t.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "http_request_duration_seconds", Help: "Request latency.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"handler", "method"})
	t.payload = prometheus.NewSummaryVec(prometheus.SummaryOpts{
		Name: "http_response_size_bytes", Help: "Response sizes.",
		Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001},
	}, []string{"handler"})
	t.queue = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "worker_queue_depth", Help: "Jobs waiting per worker.",
	}, []string{"worker"})
	t.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "http_requests_in_flight", Help: "Requests being served.",
	})
	t.temp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sensor_temperature_celsius", Help: "Temperature of simulated sensors.",
	}, []string{"sensor", "rack"})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "demo_build_info", Help: "Build information.",
	}, []string{"version", "revision"})
	info.WithLabelValues("1.4."+strconv.Itoa(i%7), fmt.Sprintf("%07x", i*2654435761%0xfffffff)).Set(1)
	t.reg.MustRegister(t.requests, t.duration, t.payload, t.queue, t.inflight, t.temp, info)
	// Touch every label combination so all series exist from the first scrape.
	for _, h := range handlers {
		for _, m := range methods {
			for _, c := range codes {
				t.requests.WithLabelValues(h, m, c)
			}
			t.duration.WithLabelValues(h, m)
		}
		t.payload.WithLabelValues(h)
	}
	t.step()
	t.handler = promhttp.HandlerFor(t.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
	return t
}

// step advances the simulation by one scrape's worth of traffic.
func (t *Target) step() {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rng
	for _, h := range handlers {
		for _, m := range methods {
			n := r.IntN(20)
			for k := 0; k < n; k++ {
				code := codes[0]
				switch p := r.Float64(); {
				case p > 0.99:
					code = codes[3]
				case p > 0.95:
					code = codes[2]
				case m != "GET" && p > 0.5:
					code = codes[1]
				}
				t.requests.WithLabelValues(h, m, code).Inc()
				t.duration.WithLabelValues(h, m).Observe(r.ExpFloat64() * 0.08)
				t.payload.WithLabelValues(h).Observe(200 + r.ExpFloat64()*3000)
			}
		}
	}
	for w := 0; w < 16; w++ {
		t.queue.WithLabelValues(strconv.Itoa(w)).Set(float64(r.IntN(50)))
	}
	for s := 0; s < 24; s++ {
		t.temp.WithLabelValues(strconv.Itoa(s), "r"+strconv.Itoa(s/8)).Set(20 + r.NormFloat64()*3)
	}
	t.inflight.Set(float64(r.IntN(100)))
}

// ServeHTTP serves the exposition, advancing the simulation first.
func (t *Target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.step()
	t.handler.ServeHTTP(w, r)
}

// Set is a group of demo targets served on one listener under
// /demo/<i>/metrics, with an HTTP SD endpoint at /sd listing them.
type Set struct {
	targets []*Target
	// Host is the host:port the SD endpoint advertises for the targets.
	Host string
}

// NewSet builds n targets.
func NewSet(n int) *Set {
	s := &Set{targets: make([]*Target, n)}
	for i := range s.targets {
		s.targets[i] = NewTarget(i)
	}
	return s
}

// Targets returns the set's targets.
func (s *Set) Targets() []*Target { return s.targets }

// Path is the metrics path of target i.
func Path(i int) string { return fmt.Sprintf("/demo/%d/metrics", i) }

// Handler serves every target and /sd.
func (s *Set) Handler() http.Handler {
	mux := http.NewServeMux()
	for i, t := range s.targets {
		mux.Handle(Path(i), t)
	}
	mux.HandleFunc("/sd", s.serveSD)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "allot demo: %d targets at /demo/<i>/metrics, HTTP SD at /sd\n", len(s.targets))
	})
	return mux
}

// serveSD answers in the Prometheus HTTP SD format, one group per target,
// each with its own instance label so series of different targets differ.
func (s *Set) serveSD(w http.ResponseWriter, r *http.Request) {
	host := s.Host
	if host == "" {
		host = r.Host
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, "[")
	for i, t := range s.targets {
		if i > 0 {
			fmt.Fprint(w, ",")
		}
		fmt.Fprintf(w, `{"targets":[%q],"labels":{"__metrics_path__":%q,"instance":%q,"service":%q}}`,
			host, Path(i), t.Name, "demo")
	}
	fmt.Fprint(w, "]")
}

// Warm advances every target a few steps so counters don't start at zero.
func (s *Set) Warm(steps int) {
	for _, t := range s.targets {
		for k := 0; k < steps; k++ {
			t.step()
		}
	}
}
