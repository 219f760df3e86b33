package rebalancer

import (
	"flag"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

func TestRegisterFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want Config
	}{
		{"defaults", nil, Config{
			Interval: DefaultInterval, Tolerance: DefaultTolerance, Hysteresis: DefaultHysteresis,
			MovesPerSecond: DefaultMovesPerSecond, MaxConcurrentMoves: DefaultMaxConcurrentMoves,
			MoveTimeout: DefaultMoveTimeout, SeriesPerScraper: DefaultSeriesPerScraper,
		}},
		{"set", []string{
			"--rebalancer.interval=1s", "--rebalancer.tolerance=0.1", "--rebalancer.hysteresis=0.03",
			"--rebalancer.moves-per-second=5", "--rebalancer.max-concurrent-moves=7",
			"--rebalancer.move-timeout=30s", "--rebalancer.series-per-scraper=1e6",
		}, Config{
			Interval: time.Second, Tolerance: 0.1, Hysteresis: 0.03, MovesPerSecond: 5,
			MaxConcurrentMoves: 7, MoveTimeout: 30 * time.Second, SeriesPerScraper: 1e6,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			f := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(f)
			require.NoError(t, f.Parse(tc.args))
			require.Equal(t, tc.want, cfg)
			require.NoError(t, cfg.Validate())
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is valid", Config{}, true},
		{"negative interval", Config{Interval: -time.Second}, false},
		{"negative tolerance", Config{Tolerance: -0.1}, false},
		{"negative hysteresis", Config{Hysteresis: -0.1}, false},
		{"negative rate", Config{MovesPerSecond: -1}, false},
		{"negative concurrency", Config{MaxConcurrentMoves: -1}, false},
		{"negative timeout", Config{MoveTimeout: -time.Second}, false},
		{"negative series", Config{SeriesPerScraper: -1}, false},
		{"bad session", Config{Session: leases.SessionConfig{TTL: time.Second}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

func TestNewAppliesDefaultsAndRegisters(t *testing.T) {
	// A client that never connects: New must not talk to etcd.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	defer cli.Close()

	_, err = New(Config{}, nil, nil, nil)
	require.Error(t, err, "no client")
	_, err = New(Config{MoveTimeout: -1}, cli, nil, nil)
	require.Error(t, err, "invalid config")

	reg := prometheus.NewRegistry()
	r, err := New(Config{ID: "r"}, cli, reg, nil)
	require.NoError(t, err)
	require.Equal(t, DefaultInterval, r.cfg.Interval)
	require.Equal(t, DefaultMoveTimeout, r.cfg.MoveTimeout)
	require.Equal(t, leases.DefaultPrefix, r.cfg.Keyspace.Prefix)
	require.Equal(t, "r", r.Status().ID)

	_, err = New(Config{ID: "again"}, cli, reg, nil)
	require.Error(t, err, "metrics registered twice")
	r.Unregister()
	r2, err := New(Config{ID: "again"}, cli, reg, nil)
	require.NoError(t, err)
	r2.Unregister()

	anon, err := New(Config{}, cli, nil, nil)
	require.NoError(t, err)
	require.NotEmpty(t, anon.Status().ID)
}

// TestZoneAware: zone awareness is off unless asked for, in code or in
// YAML, and New keeps it.
func TestZoneAware(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	defer cli.Close()
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{"interval: 1s\n", false},
		{"zone_aware: true\n", true},
	} {
		var cfg Config
		require.NoError(t, yaml.Unmarshal([]byte(tc.yaml), &cfg))
		require.Equal(t, tc.want, cfg.ZoneAware, tc.yaml)
		r, err := New(cfg, cli, nil, nil)
		require.NoError(t, err)
		require.Equal(t, tc.want, r.cfg.ZoneAware, tc.yaml)
	}
}
