package targetallocator

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// Defaults of the flags and of zero Config fields.
const (
	// DefaultCollectorTTL is three of the Collector's default 30 s polls
	// (HTTP SD refresh_interval) plus slack: a collector that misses two
	// polls in a row keeps its targets.
	DefaultCollectorTTL = 90 * time.Second
	// DefaultClaimGrace matches the scrapers' --scraper.claim-grace: how long
	// a target may stay unowned while its preferred owner is not a collector
	// served here before this API claims it for one of its collectors.
	DefaultClaimGrace = 2 * time.Second
	// DefaultSettle is how long the API waits after a change (a collector
	// registering, a catalog or member change) for more changes before it
	// claims, so that collectors starting together split the targets.
	DefaultSettle = 250 * time.Millisecond
	// DefaultFirstPollWait bounds how long a collector's first poll waits
	// for the targets claimed for it.
	DefaultFirstPollWait = 5 * time.Second
)

// Config configures the Target Allocator-compatible API.
type Config struct {
	// Enabled says whether the binary serves the API at all; New does not
	// look at it.
	Enabled bool `yaml:"enabled"`
	// CollectorTTL is the TTL of a polling collector's lease. Each poll with
	// its collector_id keeps it alive; when polls stop for this long the
	// lease is revoked and the collector's targets go to the other members.
	// It must cover a few of the collector's HTTP SD refresh intervals.
	CollectorTTL time.Duration `yaml:"collector_ttl"`
	// ClaimGrace: see DefaultClaimGrace.
	ClaimGrace time.Duration `yaml:"claim_grace"`
	// Settle: see DefaultSettle.
	Settle time.Duration `yaml:"settle"`
	// FirstPollWait: see DefaultFirstPollWait.
	FirstPollWait time.Duration `yaml:"first_poll_wait"`

	// Keyspace is where allot's etcd keys live (shared, wired by the caller).
	Keyspace leases.Keyspace `yaml:"-"`
	// Events names the catalog buckets (shared, wired by the caller).
	Events events.Config `yaml:"-"`
	// Version is recorded in the collectors' member entries.
	Version string `yaml:"-"`
}

// RegisterFlags adds --target-allocator.enabled and
// --target-allocator.collector-ttl to f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.BoolVar(&c.Enabled, "target-allocator.enabled", false,
		"Serve the OpenTelemetry Target Allocator API (/scrape_configs, /jobs, /jobs/{job}/targets) so that unchanged OTel Collectors can take a share of the targets.")
	f.DurationVar(&c.CollectorTTL, "target-allocator.collector-ttl", DefaultCollectorTTL,
		"A collector that has not polled /jobs/{job}/targets for this long loses its targets to the other members; keep it at several of the collectors' HTTP SD refresh intervals.")
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.CollectorTTL < leases.MinTTL {
		errs = append(errs, fmt.Errorf("target-allocator.collector-ttl %s is shorter than %s", c.CollectorTTL, leases.MinTTL))
	}
	if c.ClaimGrace < 0 {
		errs = append(errs, fmt.Errorf("target-allocator claim grace %s is negative", c.ClaimGrace))
	}
	if c.Settle < 0 || c.FirstPollWait < 0 {
		errs = append(errs, errors.New("target-allocator settle and first poll wait must not be negative"))
	}
	if err := c.Events.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.CollectorTTL == 0 {
		c.CollectorTTL = DefaultCollectorTTL
	}
	if c.ClaimGrace == 0 {
		c.ClaimGrace = DefaultClaimGrace
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.FirstPollWait == 0 {
		c.FirstPollWait = DefaultFirstPollWait
	}
	return c
}
