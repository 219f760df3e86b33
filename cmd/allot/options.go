package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/allot-dev/allot/pkg/leases"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// logOptions are --log.level and --log.format.
type logOptions struct {
	level, format string
}

func (o *logOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.level, "log.level", "info", "Only log messages with the given severity or above: debug, info, warn, error.")
	fs.StringVar(&o.format, "log.format", "logfmt", "Output format of log messages: logfmt or json.")
}

func (o *logOptions) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.level)); err != nil {
		return nil, fmt.Errorf("--log.level=%q: want debug, info, warn or error", o.level)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch o.format {
	case "logfmt", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, hopts)), nil
	}
	return nil, fmt.Errorf("--log.format=%q: want logfmt or json", o.format)
}

// clusterOptions say how to reach etcd and NATS.
type clusterOptions struct {
	etcdEndpoints  string
	etcdPrefix     string
	natsURL        string
	startupTimeout time.Duration
}

func (o *clusterOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.etcdEndpoints, "etcd.endpoints", "http://127.0.0.1:2379", "Comma-separated etcd client URLs.")
	fs.StringVar(&o.etcdPrefix, "etcd.prefix", "/allot/", "Key prefix of allot's keyspace in etcd.")
	fs.StringVar(&o.natsURL, "nats.url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated.")
	fs.DurationVar(&o.startupTimeout, "startup.timeout", time.Minute, "How long to retry reaching etcd and NATS at start before giving up.")
}

func (o *clusterOptions) keyspace() leases.Keyspace { return leases.Keyspace{Prefix: o.etcdPrefix} }

// backoff doubles from 100ms up to 5s.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 6)
	return min(d, 5*time.Second)
}

// connectEtcd returns a client once etcd answers, retrying with backoff
// until --startup.timeout.
func connectEtcd(ctx context.Context, o *clusterOptions, logger *slog.Logger) (*clientv3.Client, error) {
	eps := strings.Split(o.etcdEndpoints, ",")
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// Keepalive pings notice a dead member quickly, so the client moves to
		// another endpoint well within a lease TTL.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", o.etcdEndpoints, err)
	}
	deadline := time.Now().Add(o.startupTimeout)
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = cli.Get(rctx, o.etcdPrefix+"health", clientv3.WithCountOnly())
		cancel()
		if err == nil {
			return cli, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			cli.Close()
			return nil, fmt.Errorf("etcd at %s unreachable after %s (--startup.timeout): %w", o.etcdEndpoints, o.startupTimeout, err)
		}
		logger.Warn("etcd unreachable, retrying", "endpoints", o.etcdEndpoints, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt)):
		}
	}
}

// connectNATS returns a connection and its JetStream context once NATS
// answers, retrying with backoff until --startup.timeout. Once connected,
// the client reconnects by itself forever.
func connectNATS(ctx context.Context, o *clusterOptions, name string, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	deadline := time.Now().Add(o.startupTimeout)
	for attempt := 0; ; attempt++ {
		nc, err := nats.Connect(o.natsURL,
			nats.Name(name),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(500*time.Millisecond),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				logger.Warn("nats disconnected", "err", err)
			}),
			nats.ReconnectHandler(func(c *nats.Conn) {
				logger.Info("nats reconnected", "url", c.ConnectedUrl())
			}),
		)
		if err == nil {
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return nil, nil, fmt.Errorf("jetstream: %w", err)
			}
			return nc, js, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("nats at %s unreachable after %s (--startup.timeout): %w", o.natsURL, o.startupTimeout, err)
		}
		logger.Warn("nats unreachable, retrying", "url", o.natsURL, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt)):
		}
	}
}

// advertise turns a listen address such as ":8080", or what a listener on
// it reports ("[::]:8080"), into one others can dial: an unspecified host
// becomes this host's name. Advertising "[::]:8080" itself would make every
// peer dial itself.
func advertise(listen, external string) string {
	if external != "" {
		return external
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil {
			host = h
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}
