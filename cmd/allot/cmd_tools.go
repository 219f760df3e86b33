package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/allot-dev/allot/pkg/demo"
	"github.com/allot-dev/allot/pkg/sink"
)

func demoFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var (
		logOpts logOptions
		listen  string
		n       int
		host    string
	)
	logOpts.register(fs)
	fs.StringVar(&listen, "web.listen-address", ":9100", "Address to serve the demo targets on.")
	fs.IntVar(&n, "demo.targets", 30, "Number of demo targets, served at /demo/<i>/metrics.")
	fs.StringVar(&host, "demo.advertise", "", "host:port the /sd endpoint lists for the targets (default: the Host of the SD request).")
	return func(ctx context.Context, _ []string) error {
		logger, err := logOpts.logger()
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("--demo.targets=%d: must be at least 1", n)
		}
		set := demo.NewSet(n)
		set.Host = host
		set.Warm(3)
		logger.Info("serving demo targets", "targets", n, "addr", listen)
		return serveHandler(ctx, listen, set.Handler())
	}
}

func sinkFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var (
		logOpts logOptions
		listen  string
		keep    int
	)
	logOpts.register(fs)
	fs.StringVar(&listen, "web.listen-address", ":4318", "Address to receive OTLP/HTTP (/v1/metrics) and remote write (/api/v1/write) on, and serve the page.")
	fs.IntVar(&keep, "sink.samples-per-series", 10000, "Samples kept per series.")
	return func(ctx context.Context, _ []string) error {
		logger, err := logOpts.logger()
		if err != nil {
			return err
		}
		s := sink.New(keep)
		mux := http.NewServeMux()
		mux.Handle("/", s.Handler())
		mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "sink is healthy.") })
		logger.Info("sink receiving", "addr", listen)
		return serveHandler(ctx, listen, mux)
	}
}

// serveHandler serves h on addr until ctx ends.
func serveHandler(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func healthcheckFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var (
		url     string
		timeout time.Duration
	)
	fs.StringVar(&url, "url", "http://127.0.0.1:8080/-/healthy", "URL to probe.")
	fs.DurationVar(&timeout, "timeout", 3*time.Second, "Give up after this long.")
	return func(ctx context.Context, _ []string) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", url, resp.Status)
		}
		return nil
	}
}

func versionFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	return func(context.Context, []string) error {
		goVersion := "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			goVersion = bi.GoVersion
		}
		fmt.Fprintf(os.Stdout, "allot %s (%s)\n", version, goVersion)
		return nil
	}
}
