package scraper

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/scrape"
	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
)

// TestPhaseAlignsHosts runs one target in two scrape managers whose offset
// seeds differ, as two scrapers on different hosts do, and checks that with
// the phase label both scrape it at the phase its id asks for.
func TestPhaseAlignsHosts(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "phase_test 1")
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	for _, tc := range []struct {
		name     string
		interval time.Duration
		params   string // scrape_config params, which are part of the URL
	}{
		{name: "1s", interval: time.Second},
		{name: "2s with params", interval: 2 * time.Second, params: "params: {module: [http_2xx]}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := "phase-" + tc.name
			tgt := events.Target{ID: id, Job: "phase", Labels: map[string]string{
				model.AddressLabel: addr, model.InstanceLabel: addr,
			}}
			rec := &recorder{}
			want := wantPhase(id, tc.interval)
			for _, host := range []string{"host-a", "host-b"} {
				cfg, err := config.Load(fmt.Sprintf(`
global:
  external_labels: {host: %s}
scrape_configs:
- job_name: phase
  scrape_interval: %s
  scrape_timeout: 500ms
  %s
`, host, model.Duration(tc.interval), tc.params), slog.New(slog.DiscardHandler))
				require.NoError(t, err)
				// The manager seeds offsets with the real host name and the
				// external labels, which differ here as host names do
				// between scrapers; the phaser must compute the same seed.
				p, err := newPhaser(cfg, "")
				require.NoError(t, err)
				tg, ok := p.group(targetGroup(tgt), tgt.Job, id, "")
				require.True(t, ok, "no phase label value found")
				require.NotEmpty(t, tg.Targets[0][phaseLabel])
				mgr, err := scrape.NewManager(&scrape.Options{
					DiscoveryReloadInterval: model.Duration(50 * time.Millisecond),
					PassMetadataInContext:   true,
				}, slog.New(slog.DiscardHandler), nil, nil, rec.For(host), prometheus.NewRegistry())
				require.NoError(t, err)
				require.NoError(t, mgr.ApplyConfig(cfg))
				sets := make(chan map[string][]*targetgroup.Group, 1)
				sets <- map[string][]*targetgroup.Group{"phase": {tg}}
				go func() { _ = mgr.Run(sets) }()
				t.Cleanup(mgr.Stop)
			}
			require.Eventually(t, func() bool {
				n := map[string]int{}
				for _, b := range rec.target(id) {
					n[b.scraper]++
				}
				return n["host-a"] >= 2 && n["host-b"] >= 2
			}, 4*tc.interval+5*time.Second, 20*time.Millisecond)

			// Scheduling under -race on a busy machine adds tens of ms.
			slack := phaseTolerance(tc.interval) + 100*time.Millisecond
			for _, b := range rec.target(id) {
				got := time.Duration(b.ts*int64(time.Millisecond)) % tc.interval
				require.LessOrEqual(t, circularDistance(got, want, tc.interval), slack,
					"%s scraped at phase %s, want %s", b.scraper, got, want)
			}
		})
	}
}

// TestScrapeOffsetInputs checks that everything Prometheus hashes moves the
// offset, so that the search has something to work with.
func TestScrapeOffsetInputs(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("scrape_configs: [{job_name: j}]", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	p, err := newPhaser(cfg, "h")
	require.NoError(t, err)
	tgt := events.Target{ID: "x", Job: "j", Labels: map[string]string{model.AddressLabel: "a:1"}}
	tg, ok := p.group(targetGroup(tgt), "j", "x", "")
	require.True(t, ok)
	base := tg.Targets[0][phaseLabel]
	q, err := newPhaser(cfg, "other-host")
	require.NoError(t, err)
	tg2, ok := q.group(targetGroup(tgt), "j", "x", "")
	require.True(t, ok)
	require.NotEqual(t, base, tg2.Targets[0][phaseLabel], "another seed needs another value")

	// A value from an earlier config is kept when it still fits, and
	// replaced by what a search finds when it does not.
	for _, prev := range []string{string(base), string(tg2.Targets[0][phaseLabel])} {
		got, ok := p.group(targetGroup(tgt), "j", "x", prev)
		require.True(t, ok)
		require.Equal(t, base, got.Targets[0][phaseLabel], "prev %q", prev)
	}

	for _, tc := range []struct {
		name string
		job  string
		tg   *targetgroup.Group
	}{
		{"unknown job", "nope", targetGroup(tgt)},
		{"no address", "j", &targetgroup.Group{Targets: []model.LabelSet{{"a": "b"}}}},
		{"two targets", "j", &targetgroup.Group{Targets: []model.LabelSet{{model.AddressLabel: "a:1"}, {model.AddressLabel: "a:2"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := p.group(tc.tg, tc.job, "x", "")
			require.False(t, ok)
			require.Same(t, tc.tg, got)
		})
	}
}

// BenchmarkPhaseLabel measures what one target's phase label costs: a
// search (a new target, or new labels) and the check of the value it had
// (any config change), per target.
func BenchmarkPhaseLabel(b *testing.B) {
	cfg, err := config.Load("scrape_configs: [{job_name: j, scrape_interval: 15s}]", slog.New(slog.DiscardHandler))
	require.NoError(b, err)
	p, err := newPhaser(cfg, "bench-host")
	require.NoError(b, err)
	tgs := make([]*targetgroup.Group, 1000)
	prev := make([]string, len(tgs))
	for i := range tgs {
		tgs[i] = targetGroup(events.Target{ID: fmt.Sprintf("t%d", i), Job: "j", Labels: map[string]string{
			model.AddressLabel: fmt.Sprintf("10.0.%d.%d:9100", i/250, i%250), "namespace": "default", "pod": fmt.Sprintf("pod-%d", i),
		}})
		g, ok := p.group(tgs[i], "j", fmt.Sprintf("t%d", i), "")
		require.True(b, ok)
		prev[i] = string(g.Targets[0][phaseLabel])
	}
	for _, bc := range []struct {
		name string
		prev bool
	}{{"search", false}, {"recheck", true}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := range b.N {
				k := i % len(tgs)
				v := ""
				if bc.prev {
					v = prev[k]
				}
				if _, ok := p.group(tgs[k], "j", fmt.Sprintf("t%d", k), v); !ok {
					b.Fatal("no value")
				}
			}
		})
	}
}
