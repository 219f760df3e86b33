package embedded

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is a NATS server with JetStream running in this process.
type NATS struct {
	s *server.Server
}

// NATSConfig says where an embedded NATS server keeps JetStream data and listens.
type NATSConfig struct {
	// Dir holds the JetStream store. It is created if missing.
	Dir string
	// Addr is host:port for clients; port 0 picks a free port.
	// Empty means 127.0.0.1:0.
	Addr string
	// StartTimeout bounds how long Start waits for the server. Zero means 10s.
	StartTimeout time.Duration
}

// StartNATS starts a NATS server with JetStream and waits until it accepts clients.
func StartNATS(cfg NATSConfig, logger *slog.Logger) (*NATS, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	store := filepath.Join(cfg.Dir, "jetstream")
	if err := os.MkdirAll(store, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats: create store dir: %w", err)
	}
	opts := &server.Options{
		ServerName: "allot",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   store,
		NoLog:      true,
		NoSigs:     true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(cfg.StartTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after %s", cfg.StartTimeout)
	}
	logger.Info("embedded nats started", "url", s.ClientURL(), "store", store)
	return &NATS{s: s}, nil
}

// URL is the client URL, e.g. nats://127.0.0.1:4222.
func (n *NATS) URL() string { return n.s.ClientURL() }

// Close shuts the server down and waits for it to finish.
func (n *NATS) Close() {
	n.s.Shutdown()
	n.s.WaitForShutdown()
}
