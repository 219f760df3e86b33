// Command allot scrapes Prometheus targets with many stateless scrapers
// coordinated through etcd leases and ships the samples as OpenTelemetry.
//
// One binary runs every role, chosen by the first argument:
//
//	allot [all]        everything in one process, with embedded etcd and NATS
//	allot discoverer   service discovery → target catalog on NATS JetStream
//	allot scraper      claims targets through etcd and scrapes them
//	allot rebalancer   moves targets between scrapers to even out load
//	allot demo         serves demo targets
//	allot sink         a debug backend receiving OTLP and remote write
//	allot status | targets | drain <scraper>   operator verbs
//	allot healthcheck  probes a running allot (for container HEALTHCHECKs)
//	allot version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand: its flags and what it runs.
type command struct {
	summary string
	flags   func(fs *flag.FlagSet) func(ctx context.Context, args []string) error
}

var commands = map[string]command{
	"all":         {"run discoverer, scrapers and rebalancer with embedded etcd and NATS (default)", allFlags},
	"discoverer":  {"run service discovery and publish the target catalog", discovererFlags},
	"scraper":     {"claim and scrape targets", scraperFlags},
	"rebalancer":  {"move targets between scrapers to even out load", rebalancerFlags},
	"demo":        {"serve demo targets", demoFlags},
	"sink":        {"receive OTLP/HTTP and remote write and show what arrived", sinkFlags},
	"status":      {"print the cluster's scrapers and balance", statusFlags},
	"targets":     {"print targets and their owners", targetsFlags},
	"drain":       {"move every target off a scraper: allot drain <scraper>", drainFlags},
	"healthcheck": {"exit 0 if a running allot answers /-/healthy", healthcheckFlags},
	"version":     {"print the version", versionFlags},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and runs a subcommand until it ends or ctx is cancelled;
// it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "all"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage(stdout)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "allot: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("allot "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	runFn := cmd.flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := runFn(ctx, fs.Args()); err != nil {
		fmt.Fprintf(stderr, "allot %s: %v\n", name, err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: allot [command] [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'allot <command> -h' for a command's flags.")
}
