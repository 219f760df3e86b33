package component

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/sink"
)

// The handoff assertions are only as good as the counting behind them.

func TestAnalyse(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []sink.Sample {
		out := make([]sink.Sample, len(ms))
		for i, m := range ms {
			out[i] = sink.Sample{T: t0.Add(time.Duration(m) * time.Millisecond), V: 1}
		}
		return out
	}
	for _, tc := range []struct {
		name                    string
		samples                 []sink.Sample
		missing, duplicated, st int
	}{
		{name: "steady", samples: at(0, 1000, 2000, 3000)},
		{name: "jitter within half an interval", samples: at(0, 1400, 2000, 2600, 4000)},
		{name: "one missing", samples: at(0, 1000, 3000, 4000), missing: 1},
		{name: "1.6 intervals counts as one", samples: at(0, 1600, 2600), missing: 1},
		{name: "three missing", samples: at(0, 4000, 5000), missing: 3},
		{name: "duplicate at the same time", samples: at(0, 1000, 1000, 2000), duplicated: 1},
		{name: "duplicate out of order", samples: at(2000, 0, 1000, 1300), duplicated: 1},
		{name: "gap and duplicate", samples: at(0, 2000, 2100, 3000), missing: 1, duplicated: 1},
		{name: "outside the window ignored", samples: at(-5000, 0, 1000, 2000, 9000)},
		{
			name:    "staleness markers counted anywhere",
			samples: append(at(0, 1000, 2000), sink.Sample{T: t0.Add(-time.Hour), Stale: true}),
			st:      1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := analyse(tc.samples, t0, t0.Add(5*time.Second))
			require.Equal(t, tc.missing, c.missing, "missing: %s", c)
			require.Equal(t, tc.duplicated, c.duplicated, "duplicated: %s", c)
			require.Equal(t, tc.st, c.stale, "stale: %s", c)
		})
	}
}

func TestSharedTime(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		out := make([]time.Time, len(ms))
		for i, m := range ms {
			out[i] = t0.Add(time.Duration(m) * time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		xs, ys []time.Time
		want   time.Duration
	}{
		{name: "clean handoff", xs: at(0, 1000, 2000), ys: at(3000, 4000), want: 0},
		{name: "handoff with a gap", xs: at(0, 1000), ys: at(3000, 4000), want: 0},
		{name: "one duplicated scrape", xs: at(0, 1000, 2000), ys: at(2000, 3000), want: time.Second},
		{name: "one scrape half an interval early", xs: at(0, 1000, 2000), ys: at(2500, 3500), want: 500 * time.Millisecond},
		{name: "two scraping side by side", xs: at(0, 1000, 2000, 3000), ys: at(0, 1000, 2000, 3000), want: 4 * time.Second},
		{name: "away and back", xs: at(0, 1000, 5000, 6000), ys: at(2000, 3000, 4000), want: 0},
		{name: "out of order", xs: at(2000, 0, 1000), ys: at(3000, 2000), want: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, sharedTime(tc.xs, tc.ys))
			require.Equal(t, tc.want, sharedTime(tc.ys, tc.xs))
		})
	}
}
