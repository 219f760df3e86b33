package main

import (
	"context"
	"crypto/tls"
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
	tls   *tls.Config // nil: plain HTTP
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

// serveTLS makes serve use TLS with cfg (nil: plain HTTP). Only the
// discoverer offers it (--web.tls-*): it serves the Target Allocator API,
// whose secrets are shown over TLS only. Scrapers are fetched from over
// plain HTTP (web.Remote), and `all` posts to its built-in sink over HTTP.
func (s *server) serveTLS(cfg *tls.Config) { s.tls = cfg }

// serve serves until ctx ends, then shuts down gracefully.
func (s *server) serve(ctx context.Context, logger *slog.Logger) error {
	srv := &http.Server{
		Handler: s.mux, ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures (no or a wrong client certificate, plain
		// HTTP to a TLS port) are logged here, through the process's logger.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelInfo),
	}
	errc := make(chan error, 1)
	if cfg := s.tls; cfg != nil {
		// The certificates are in cfg already (tlsOptions.config), so
		// ServeTLS is given no files.
		srv.TLSConfig = cfg
		go func() { errc <- srv.ServeTLS(s.ln, "", "") }()
		logger.Info("serving HTTPS", "addr", s.Addr(), "client_certificates", cfg.ClientAuth == tls.RequireAndVerifyClientCert)
	} else {
		go func() { errc <- srv.Serve(s.ln) }()
		logger.Info("serving HTTP", "addr", s.Addr())
	}
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
