package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/allot-dev/allot/pkg/web"
)

// server is the process's one HTTP server. Roles mount their handlers on
// mux and register readiness checks before serve is called.
type server struct {
	mux *http.ServeMux
	reg *prometheus.Registry
	ln  net.Listener

	mu    sync.Mutex
	ready map[string]func() bool
}

// newServer listens at once, so the bound address (with port 0 resolved) is
// known before the roles that advertise it start.
func newServer(addr string) (*server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --web.listen-address=%s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "allot_build_info", Help: "Build information.", ConstLabels: prometheus.Labels{"version": version},
	}, func() float64 { return 1 }))
	s := &server{mux: http.NewServeMux(), reg: reg, ln: ln, ready: map[string]func() bool{}}
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.Handle("/-/healthy", web.Healthy())
	s.mux.Handle("/-/ready", web.Ready(s.notReady))
	return s, nil
}

// Addr is the address the server listens on.
func (s *server) Addr() string { return s.ln.Addr().String() }

// addReady registers a readiness check under name.
func (s *server) addReady(name string, ok func() bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready[name] = ok
}

func (s *server) notReady() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, ok := range s.ready {
		if !ok() {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// serve serves until ctx ends, then shuts down gracefully.
func (s *server) serve(ctx context.Context, logger *slog.Logger) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	logger.Info("serving HTTP", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}
