package scraper

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestZoneConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		args  []string
		label string
	}{
		{"default label", nil, DefaultZoneLabel},
		{"label set", []string{"--scraper.zone-label=zone"}, "zone"},
		// Empty means the default, as for the other fields.
		{"label emptied", []string{"--scraper.zone-label="}, DefaultZoneLabel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			f := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(f)
			require.NoError(t, f.Parse(append([]string{"--scraper.id=s"}, tc.args...)))
			require.False(t, cfg.ZoneAware, "zone awareness is off unless the command sets it")
			cfg, err := cfg.withDefaults()
			require.NoError(t, err)
			require.Equal(t, tc.label, cfg.ZoneLabel)
		})
	}
}
