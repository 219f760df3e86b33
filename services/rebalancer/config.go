package rebalancer

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/allot-dev/allot/pkg/leases"
)

// Defaults of the flags, also applied by New to zero fields so that a Config
// built in code needs only what differs.
const (
	DefaultInterval           = 5 * time.Second
	DefaultTolerance          = 0.05
	DefaultHysteresis         = 0.02
	DefaultMovesPerSecond     = 50
	DefaultMaxConcurrentMoves = 100
	DefaultMoveTimeout        = 10 * time.Second
	DefaultSeriesPerScraper   = 500000
)

// Config configures a [Rebalancer].
type Config struct {
	// ID names this rebalancer in the election and in logs. Empty means the
	// host name and process id.
	ID string `yaml:"id"`
	// Keyspace is where allot's keys live; the zero value is the default prefix.
	Keyspace leases.Keyspace `yaml:"-"`
	// Session configures the lease a candidate campaigns and writes moves with.
	Session leases.SessionConfig `yaml:"-"`

	// Interval is how often the leader evaluates the cluster. It also
	// evaluates (coalesced) when members or drains change and as soon as the
	// last move of a plan has finished.
	Interval time.Duration `yaml:"interval"`
	// Tolerance: a plan is made only when busiest/mean > 1+Tolerance.
	Tolerance float64 `yaml:"tolerance"`
	// Hysteresis is handed to placement.Plan: a move must improve the
	// imbalance by at least this much, so that plans converge instead of
	// oscillating around the tolerance.
	Hysteresis float64 `yaml:"hysteresis"`
	// MovesPerSecond bounds how fast moves are started.
	MovesPerSecond float64 `yaml:"moves_per_second"`
	// MaxConcurrentMoves bounds how many moves are pending at once.
	MaxConcurrentMoves int `yaml:"max_concurrent_moves"`
	// MoveTimeout is how long a move may stay pending before it is aborted
	// (the target then stays with its source). It is also the move's
	// deadline as the destination sees it.
	MoveTimeout time.Duration `yaml:"move_timeout"`
	// SeriesPerScraper is the load one scraper should carry; the recommended
	// number of scrapers is derived from it.
	SeriesPerScraper float64 `yaml:"series_per_scraper"`
	// ZoneAware plans with placement.PlanConfig.ZoneAware: a target whose
	// zone (as its owner's load report gives it) has scrapers not draining
	// is kept on them, and moved back to them when found elsewhere. The
	// scrapers must claim the same way (scraper.Config.ZoneAware), so the
	// command sets both from one flag, --placement.zone-aware.
	ZoneAware bool `yaml:"zone_aware"`
}

// RegisterFlags adds the --rebalancer.* flags with their defaults to f. The
// ID, keyspace and session are wired by the caller (they are shared).
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Interval, "rebalancer.interval", DefaultInterval,
		"How often the rebalancer leader evaluates the load (it also reacts to member changes).")
	f.Float64Var(&c.Tolerance, "rebalancer.tolerance", DefaultTolerance,
		"Plan moves only when the busiest scraper carries more than mean × (1 + tolerance) series.")
	f.Float64Var(&c.Hysteresis, "rebalancer.hysteresis", DefaultHysteresis,
		"Minimum relative improvement a move must bring, so that plans never oscillate.")
	f.Float64Var(&c.MovesPerSecond, "rebalancer.moves-per-second", DefaultMovesPerSecond,
		"Maximum rate at which moves are started.")
	f.IntVar(&c.MaxConcurrentMoves, "rebalancer.max-concurrent-moves", DefaultMaxConcurrentMoves,
		"Maximum number of moves pending at once.")
	f.DurationVar(&c.MoveTimeout, "rebalancer.move-timeout", DefaultMoveTimeout,
		"A move whose destination has not taken over after this long is aborted; the target stays with its source.")
	f.Float64Var(&c.SeriesPerScraper, "rebalancer.series-per-scraper", DefaultSeriesPerScraper,
		"Series one scraper should carry; used for allot_recommended_scrapers.")
}

// applyDefaults fills zero fields with the defaults.
func (c *Config) applyDefaults() {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Tolerance == 0 {
		c.Tolerance = DefaultTolerance
	}
	if c.Hysteresis == 0 {
		c.Hysteresis = DefaultHysteresis
	}
	if c.MovesPerSecond == 0 {
		c.MovesPerSecond = DefaultMovesPerSecond
	}
	if c.MaxConcurrentMoves == 0 {
		c.MaxConcurrentMoves = DefaultMaxConcurrentMoves
	}
	if c.MoveTimeout == 0 {
		c.MoveTimeout = DefaultMoveTimeout
	}
	if c.SeriesPerScraper == 0 {
		c.SeriesPerScraper = DefaultSeriesPerScraper
	}
}

// Validate reports a configuration that cannot be used. Zero fields are
// valid (they mean the default).
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("rebalancer.interval %s is negative", c.Interval))
	}
	if c.Tolerance < 0 {
		errs = append(errs, fmt.Errorf("rebalancer.tolerance %g is negative", c.Tolerance))
	}
	if c.Hysteresis < 0 {
		errs = append(errs, fmt.Errorf("rebalancer.hysteresis %g is negative", c.Hysteresis))
	}
	if c.MovesPerSecond < 0 {
		errs = append(errs, fmt.Errorf("rebalancer.moves-per-second %g is negative", c.MovesPerSecond))
	}
	if c.MaxConcurrentMoves < 0 {
		errs = append(errs, fmt.Errorf("rebalancer.max-concurrent-moves %d is negative", c.MaxConcurrentMoves))
	}
	if c.MoveTimeout < 0 {
		errs = append(errs, fmt.Errorf("rebalancer.move-timeout %s is negative", c.MoveTimeout))
	}
	if c.SeriesPerScraper < 0 {
		errs = append(errs, fmt.Errorf("rebalancer.series-per-scraper %g is negative", c.SeriesPerScraper))
	}
	if err := c.Session.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
