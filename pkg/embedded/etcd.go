package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a single-member etcd cluster running in this process.
type Etcd struct {
	e        *embed.Etcd
	endpoint string
}

// EtcdConfig says where an embedded etcd keeps its data and listens.
type EtcdConfig struct {
	// Dir holds the member's data directory. It is created if missing.
	Dir string
	// ClientAddr is the host:port for clients; port 0 picks a free port.
	// Empty means 127.0.0.1:0.
	ClientAddr string
	// StartTimeout bounds how long Start waits for the member to serve.
	// Zero means 30s.
	StartTimeout time.Duration
}

// StartEtcd starts a one-member etcd and waits until it serves clients.
func StartEtcd(cfg EtcdConfig, logger *slog.Logger) (*Etcd, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:0"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded etcd: create data dir: %w", err)
	}
	clientAddr, err := resolvePort(cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: client address: %w", err)
	}
	peerAddr, err := resolvePort("127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: peer address: %w", err)
	}

	ec := embed.NewConfig()
	ec.Name = "allot"
	ec.Dir = filepath.Join(cfg.Dir, "etcd")
	ec.LogLevel = "error"
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := url.URL{Scheme: "http", Host: clientAddr}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	ec.ListenClientUrls = []url.URL{cu}
	ec.AdvertiseClientUrls = []url.URL{cu}
	ec.ListenPeerUrls = []url.URL{pu}
	ec.AdvertisePeerUrls = []url.URL{pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	// A lone member needs no pre-vote delays; this keeps start-up and lease
	// expiry (the failover clock) close to what a healthy cluster shows.
	ec.TickMs = 50
	ec.ElectionMs = 500

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(cfg.StartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd: not ready after %s", cfg.StartTimeout)
	}
	logger.Info("embedded etcd started", "endpoint", cu.String(), "dir", ec.Dir)
	return &Etcd{e: e, endpoint: cu.String()}, nil
}

// Endpoint is the client URL, e.g. http://127.0.0.1:2379.
func (e *Etcd) Endpoint() string { return e.endpoint }

// Client returns a new client connected to this member. The caller closes it.
func (e *Etcd) Client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: client: %w", err)
	}
	return cli, nil
}

// Close stops the member and waits until it has released its ports and files.
func (e *Etcd) Close() {
	e.e.Close()
	<-e.e.Server.StopNotify()
}

// resolvePort turns host:0 into host:<free port>. etcd needs concrete URLs
// to advertise, so the port is chosen here rather than by the listener.
func resolvePort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WaitHealthy blocks until a client at endpoint answers a read, or ctx ends.
func WaitHealthy(ctx context.Context, cli *clientv3.Client) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd not healthy: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
