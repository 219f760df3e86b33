package scraper

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/prometheus/scrape"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// Defaults of the Config fields that are not flags.
const (
	DefaultClaimGrace     = 2 * time.Second
	DefaultClaimBatch     = 127
	DefaultReloadInterval = 100 * time.Millisecond
	DefaultLoadInterval   = 5 * time.Second
	// DefaultZoneLabel is hidden (a __ label is not attached to series):
	// set it by relabelling, e.g. from
	// __meta_kubernetes_endpointslice_endpoint_zone.
	DefaultZoneLabel = "__zone__"
)

// Config configures a Scraper.
type Config struct {
	// ID names the scraper in members/, claims/ and load/. Empty means the
	// host name, a dash and 4 random hex digits, so a restarted process is
	// a new member.
	ID string `yaml:"id"`
	// Addr is the advertised address of the scraper's HTTP status API,
	// published in its member record.
	Addr string `yaml:"addr"`
	// Zone and Weight are the scraper's placement attributes.
	Zone   string  `yaml:"zone"`
	Weight float64 `yaml:"weight"`
	// ZoneAware makes a target's first choices the scrapers of its zone
	// (when its zone has one), as the rebalancer's zone-aware plans keep it
	// there; see ranking.go. Scrapers and rebalancer must agree on it, so
	// the command sets it from one flag for both (--placement.zone-aware).
	ZoneAware bool `yaml:"zone_aware"`
	// ZoneLabel is the target label a target's zone is read from. Targets
	// reach the scrapers without their __meta_* labels, so the zone has to
	// be copied into this label by relabelling.
	ZoneLabel string `yaml:"zone_label"`
	// Version is published in the member record.
	Version string `yaml:"-"`

	Keyspace leases.Keyspace      `yaml:"-"`
	Session  leases.SessionConfig `yaml:"-"`
	Events   events.Config        `yaml:"-"`

	// ClaimGrace is how long the second choice for a slot waits before it
	// claims a target that is still unowned.
	ClaimGrace time.Duration `yaml:"claim_grace"`
	// ClaimBatch is the number of targets per claim transaction.
	ClaimBatch int `yaml:"claim_batch"`
	// ReloadInterval is scrape.Options.DiscoveryReloadInterval: how often
	// the scrape manager applies target changes.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// LoadInterval is the period of load reports.
	LoadInterval time.Duration `yaml:"load_interval"`
	// ScrapeOptions, if set, adjusts the scrape manager's options for the
	// sink (e.g. otlp.ScrapeOptions). PassMetadataInContext stays on: the
	// gate needs it.
	ScrapeOptions func(*scrape.Options) `yaml:"-"`
}

// RegisterFlags adds the scraper's flags to f, with their defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.ID, "scraper.id", "", "ID of this scraper (default: host name, a dash and 4 random hex digits).")
	f.StringVar(&c.Zone, "scraper.zone", "", "Zone of this scraper, for placement.")
	f.StringVar(&c.ZoneLabel, "scraper.zone-label", DefaultZoneLabel, "Target label holding the target's zone (set it by relabelling; __meta_* labels do not reach the scrapers). Its value is published in load reports, and with --placement.zone-aware a target is claimed by a scraper of its zone.")
	f.Float64Var(&c.Weight, "scraper.weight", 1, "Relative capacity of this scraper; it is the first choice for a share of targets proportional to it.")
	f.DurationVar(&c.ClaimGrace, "scraper.claim-grace", DefaultClaimGrace, "How long the second-choice scraper waits before claiming a target that is still unowned.")
	f.DurationVar(&c.LoadInterval, "scraper.load-interval", DefaultLoadInterval, "How often the scraper reports its load to etcd.")
}

// Validate reports a configuration that cannot be used.
func (c Config) Validate() error {
	var errs []error
	if c.Weight < 0 {
		errs = append(errs, fmt.Errorf("scraper.weight %g is negative", c.Weight))
	}
	if c.ClaimGrace < 0 {
		errs = append(errs, fmt.Errorf("scraper.claim-grace %s is negative", c.ClaimGrace))
	}
	if c.LoadInterval < 0 {
		errs = append(errs, fmt.Errorf("scraper.load-interval %s is negative", c.LoadInterval))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("reload interval %s is negative", c.ReloadInterval))
	}
	if err := c.Session.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// withDefaults fills in zero values.
func (c Config) withDefaults() (Config, error) {
	if c.ID == "" {
		id, err := defaultID()
		if err != nil {
			return c, err
		}
		c.ID = id
	}
	if c.Weight == 0 {
		c.Weight = 1
	}
	if c.ClaimGrace == 0 {
		c.ClaimGrace = DefaultClaimGrace
	}
	if c.ClaimBatch <= 0 {
		c.ClaimBatch = DefaultClaimBatch
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = DefaultReloadInterval
	}
	if c.LoadInterval == 0 {
		c.LoadInterval = DefaultLoadInterval
	}
	if c.ZoneLabel == "" {
		c.ZoneLabel = DefaultZoneLabel
	}
	return c, nil
}

func defaultID() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "scraper"
	}
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random scraper id: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}
