package discoverer

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
)

// loadConfig parses a Prometheus config as cmd/allot would.
func loadConfig(t testing.TB, y string) *config.Config {
	t.Helper()
	c, err := config.Load(y, nil)
	require.NoError(t, err)
	return c
}

// jobSpecs turns a config's scrape configs into catalog job specs.
func jobSpecs(t testing.TB, c *config.Config) map[string]jobSpec {
	t.Helper()
	scs, err := c.GetScrapeConfigs()
	require.NoError(t, err)
	specs := map[string]jobSpec{}
	for _, sc := range scs {
		y, err := jobYAML(sc)
		require.NoError(t, err)
		specs[sc.JobName] = jobSpec{cfg: sc, event: events.NewJob(sc.JobName, y)}
	}
	return specs
}

func tg(source string, common model.LabelSet, targets ...model.LabelSet) *targetgroup.Group {
	return &targetgroup.Group{Source: source, Labels: common, Targets: targets}
}

func addr(a string, extra ...string) model.LabelSet {
	ls := model.LabelSet{model.AddressLabel: model.LabelValue(a)}
	for i := 0; i+1 < len(extra); i += 2 {
		ls[model.LabelName(extra[i])] = model.LabelValue(extra[i+1])
	}
	return ls
}

func TestRelabel(t *testing.T) {
	type want struct {
		// active: address → labels that must be present with these values
		active map[string]map[string]string
		// dropped: address (discovered) → reason substring
		dropped map[string]string
	}
	cases := []struct {
		name    string
		relabel string
		group   *targetgroup.Group
		want    want
	}{
		{
			name:  "no relabelling: defaults, meta labels removed",
			group: tg("g", model.LabelSet{"__meta_zone": "a", "team": "x"}, addr("h1:80")),
			want: want{active: map[string]map[string]string{"h1:80": {
				"job": "j", "instance": "h1:80", "team": "x", "__address__": "h1:80",
				"__scheme__": "http", "__metrics_path__": "/metrics", "__scrape_interval__": "1m", "__scrape_timeout__": "10s",
			}}},
		},
		{
			name: "keep",
			relabel: `
      - source_labels: [__meta_zone]
        regex: a
        action: keep`,
			group: tg("g", nil, addr("h1:80", "__meta_zone", "a"), addr("h2:80", "__meta_zone", "b")),
			want: want{
				active:  map[string]map[string]string{"h1:80": {"instance": "h1:80"}},
				dropped: map[string]string{"h2:80": `relabel_configs[0] (action keep, source_labels [__meta_zone], regex "a") dropped it`},
			},
		},
		{
			name: "drop",
			relabel: `
      - source_labels: [__meta_zone]
        regex: a
        action: drop`,
			group: tg("g", nil, addr("h1:80", "__meta_zone", "a"), addr("h2:80", "__meta_zone", "b")),
			want: want{
				active:  map[string]map[string]string{"h2:80": {"instance": "h2:80"}},
				dropped: map[string]string{"h1:80": `relabel_configs[0] (action drop, source_labels [__meta_zone], regex "a") dropped it`},
			},
		},
		{
			name: "the rule that drops is named by its index, after rules that keep",
			relabel: `
      - source_labels: [__meta_zone]
        target_label: zone
      - source_labels: [__address__]
        modulus: 2
        target_label: __tmp_shard
        action: hashmod
      - source_labels: [zone, __meta_rack]
        separator: /
        regex: a/r1
        action: keep`,
			group: tg("g", nil, addr("h1:80", "__meta_zone", "a", "__meta_rack", "r1"), addr("h2:80", "__meta_zone", "a", "__meta_rack", "r2")),
			want: want{
				active:  map[string]map[string]string{"h1:80": {"zone": "a"}},
				dropped: map[string]string{"h2:80": `relabel_configs[2] (action keep, source_labels [zone __meta_rack], separator "/", regex "a/r1") dropped it`},
			},
		},
		{
			name: "keepequal",
			relabel: `
      - source_labels: [__meta_port]
        target_label: __meta_expected_port
        action: keepequal`,
			group: tg("g", model.LabelSet{"__meta_expected_port": "80"}, addr("h1:80", "__meta_port", "80"), addr("h2:81", "__meta_port", "81")),
			want: want{
				active:  map[string]map[string]string{"h1:80": {"instance": "h1:80"}},
				dropped: map[string]string{"h2:81": `relabel_configs[0] (action keepequal, source_labels [__meta_port], target_label __meta_expected_port) dropped it`},
			},
		},
		{
			name: "dropequal",
			relabel: `
      - source_labels: [__meta_port]
        target_label: __meta_expected_port
        action: dropequal`,
			group: tg("g", model.LabelSet{"__meta_expected_port": "80"}, addr("h1:80", "__meta_port", "80"), addr("h2:81", "__meta_port", "81")),
			want: want{
				active:  map[string]map[string]string{"h2:81": {"instance": "h2:81"}},
				dropped: map[string]string{"h1:80": `relabel_configs[0] (action dropequal, source_labels [__meta_port], target_label __meta_expected_port) dropped it`},
			},
		},
		{
			name: "labelkeep that loses the address names the rule",
			relabel: `
      - target_label: team
        replacement: x
      - regex: (job|team|__.*_interval__|__scrape_timeout__|__scheme__|__metrics_path__)
        action: labelkeep`,
			group: tg("g", nil, addr("h1:80")),
			want:  want{dropped: map[string]string{"h1:80": `no address: relabel_configs[1] (action labelkeep, regex "(job|team|__.*_interval__|__scrape_timeout__|__scheme__|__metrics_path__)") removed __address__`}},
		},
		{
			name: "replace that empties the address names the rule",
			relabel: `
      - source_labels: [__meta_ip]
        target_label: __address__`,
			group: tg("g", nil, addr("h1:80")),
			want:  want{dropped: map[string]string{"h1:80": `no address: relabel_configs[0] (action replace, source_labels [__meta_ip], target_label __address__, replacement "$1") removed __address__`}},
		},
		{
			name:  "discovered without an address",
			group: tg("g", nil, model.LabelSet{"__meta_pod": "p"}),
			want:  want{dropped: map[string]string{"": "no address: discovered without __address__"}},
		},
		{
			name: "replace",
			relabel: `
      - source_labels: [__meta_zone, __meta_rack]
        separator: "-"
        target_label: location
      - target_label: __metrics_path__
        replacement: /probe`,
			group: tg("g", model.LabelSet{"__meta_rack": "r7"}, addr("h1:80", "__meta_zone", "a")),
			want:  want{active: map[string]map[string]string{"h1:80": {"location": "a-r7", "__metrics_path__": "/probe"}}},
		},
		{
			name: "labelmap",
			relabel: `
      - regex: __meta_kubernetes_pod_label_(.+)
        action: labelmap`,
			group: tg("g", nil, addr("h1:80", "__meta_kubernetes_pod_label_app", "web", "__meta_kubernetes_pod_label_tier", "fe")),
			want:  want{active: map[string]map[string]string{"h1:80": {"app": "web", "tier": "fe"}}},
		},
		{
			name: "address rewrite keeps instance from the new address",
			relabel: `
      - source_labels: [__address__]
        regex: ([^:]+)(?::\d+)?
        replacement: $1:9100
        target_label: __address__`,
			group: tg("g", nil, addr("h1:80"), addr("h2")),
			want: want{active: map[string]map[string]string{
				"h1:9100": {"instance": "h1:9100"},
				"h2:9100": {"instance": "h2:9100"},
			}},
		},
		{
			name: "address removed: dropped with PopulateLabels' reason",
			relabel: `
      - regex: __address__
        action: labeldrop`,
			group: tg("g", nil, addr("h1:80")),
			want:  want{dropped: map[string]string{"h1:80": `no address: relabel_configs[0] (action labeldrop, regex "__address__") removed __address__`}},
		},
		{
			name: "bad scrape interval label: dropped with the error",
			relabel: `
      - target_label: __scrape_interval__
        replacement: soon`,
			group: tg("g", nil, addr("h1:80")),
			want:  want{dropped: map[string]string{"h1:80": `error parsing scrape interval: not a valid duration string: "soon" (__scrape_interval__ set by relabel_configs[0] (action replace, target_label __scrape_interval__, replacement "soon"))`}},
		},
		{
			name: "a label name receivers reject: dropped, not published",
			relabel: `
      - target_label: team.name
        replacement: x`,
			group: tg("g", nil, addr("h1:80")),
			want:  want{dropped: map[string]string{"h1:80": "not publishable: events: invalid target: labels: invalid label name \"team.name\""}},
		},
		{
			name: "param and scheme from labels",
			relabel: `
      - target_label: __param_module
        replacement: http_2xx
      - target_label: __scheme__
        replacement: https`,
			group: tg("g", nil, addr("h1:443")),
			want:  want{active: map[string]map[string]string{"h1:443": {"__param_module": "http_2xx", "__scheme__": "https"}}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := "scrape_configs:\n  - job_name: j\n"
			if tc.relabel != "" {
				y += "    relabel_configs:" + tc.relabel + "\n"
			}
			c := newCatalog()
			c.setJobs(jobSpecs(t, loadConfig(t, y)))
			c.apply([]update{{job: "j", provider: 1, groups: []*targetgroup.Group{tc.group}}})

			active, dropped := c.list()
			gotActive := map[string]map[string]string{}
			for _, a := range active {
				require.Equal(t, "j", a.Job)
				require.Equal(t, events.TargetID("j", a.Labels), a.ID, "ID is events.TargetID of the final labels")
				for n := range a.Labels {
					require.False(t, strings.HasPrefix(n, model.MetaLabelPrefix), "meta label %s kept", n)
				}
				require.NotEmpty(t, a.DiscoveredLabels[model.AddressLabel])
				gotActive[a.Labels[model.AddressLabel]] = a.Labels
			}
			require.ElementsMatch(t, slices.Collect(maps.Keys(tc.want.active)), slices.Collect(maps.Keys(gotActive)))
			for a, wantLabels := range tc.want.active {
				for n, v := range wantLabels {
					require.Equal(t, v, gotActive[a][n], "target %s label %s", a, n)
				}
			}
			gotDropped := map[string]string{}
			for _, d := range dropped {
				require.Equal(t, "j", d.Job)
				gotDropped[d.DiscoveredLabels[model.AddressLabel]] = d.Reason
			}
			require.ElementsMatch(t, slices.Collect(maps.Keys(tc.want.dropped)), slices.Collect(maps.Keys(gotDropped)))
			for a, reason := range tc.want.dropped {
				require.Contains(t, gotDropped[a], reason, "dropped %s", a)
			}
			act, drp, ok := c.counts("j")
			require.True(t, ok)
			require.Equal(t, len(tc.want.active), act)
			require.Equal(t, len(tc.want.dropped), drp)
		})
	}
}

// takeIDs returns the changed target IDs as the strings the bucket uses,
// split by whether they would be put or deleted.
func takeIDs(t *testing.T, c *catalog) (puts, dels []string) {
	t.Helper()
	ch := c.takeChanges()
	p, d := c.resolveTargets(slices.Collect(maps.Keys(ch.targets)))
	for _, tt := range p {
		require.NoError(t, tt.Validate())
		puts = append(puts, tt.Labels[model.AddressLabel])
	}
	slices.Sort(puts)
	return puts, d
}

func TestCatalogChanges(t *testing.T) {
	cfg := loadConfig(t, "scrape_configs:\n  - job_name: j\n")
	c := newCatalog()
	c.track(true)
	c.setJobs(jobSpecs(t, cfg))
	jobs := c.takeChanges().jobs
	require.Equal(t, map[string]struct{}{"j": {}}, jobs)

	apply := func(provider uint64, groups ...*targetgroup.Group) {
		c.apply([]update{{job: "j", provider: provider, groups: groups}})
	}
	end := func(provider uint64) { c.apply([]update{{job: "j", provider: provider, ended: true}}) }

	apply(1, tg("a", nil, addr("h1:80"), addr("h2:80")), tg("b", nil, addr("h3:80")))
	puts, dels := takeIDs(t, c)
	require.Equal(t, []string{"h1:80", "h2:80", "h3:80"}, puts)
	require.Empty(t, dels)

	// The same content again, as a new group value: nothing changes.
	apply(1, tg("a", nil, addr("h1:80"), addr("h2:80")))
	require.True(t, c.takeChanges().empty())

	// One target of a group changes: one put, one delete.
	apply(1, tg("a", nil, addr("h1:80"), addr("h4:80")))
	puts, dels = takeIDs(t, c)
	require.Equal(t, []string{"h4:80"}, puts)
	require.Len(t, dels, 1)

	// A second provider reports a target the first one has: it is shared,
	// so neither its arrival nor the first provider's end changes it.
	apply(2, tg("x", nil, addr("h3:80")))
	require.True(t, c.takeChanges().empty())
	end(1)
	puts, dels = takeIDs(t, c)
	require.Empty(t, puts)
	require.Len(t, dels, 2, "h1 and h4 go, h3 stays with provider 2")
	active, _ := c.list()
	require.Len(t, active, 1)
	require.Equal(t, "h3:80", active[0].Labels[model.AddressLabel])

	// An empty group removes its source.
	apply(2, tg("x", nil))
	_, dels = takeIDs(t, c)
	require.Len(t, dels, 1)
	act, _, _ := c.counts("j")
	require.Zero(t, act)

	// Updates for an unknown job (a provider being stopped) are ignored.
	c.apply([]update{{job: "gone", provider: 9, groups: []*targetgroup.Group{tg("a", nil, addr("h9:80"))}}})
	require.True(t, c.takeChanges().empty())
}

func TestCatalogSetJobs(t *testing.T) {
	c := newCatalog()
	c.track(true)
	c.setJobs(jobSpecs(t, loadConfig(t, `
scrape_configs:
  - job_name: a
  - job_name: b
`)))
	for _, job := range []string{"a", "b"} {
		c.apply([]update{{job: job, provider: 1, groups: []*targetgroup.Group{tg("g", nil, addr("h1:80"), addr("h2:80"))}}})
	}
	c.takeChanges()

	// Relabelling of a changes (the published config does not: relabel
	// configs are not published): its targets are relabelled from the
	// groups already known.
	c.setJobs(jobSpecs(t, loadConfig(t, `
scrape_configs:
  - job_name: a
    relabel_configs:
      - source_labels: [__address__]
        regex: h1.*
        action: drop
  - job_name: b
`)))
	ch := c.takeChanges()
	require.Empty(t, ch.jobs, "published config of a is unchanged")
	puts, dels := c.resolveTargets(slices.Collect(maps.Keys(ch.targets)))
	require.Empty(t, puts)
	require.Len(t, dels, 1)
	_, dropped := c.list()
	require.Len(t, dropped, 1)

	// The scrape interval of b changes: its config hash and so every one
	// of its targets change (new labels, new IDs).
	c.setJobs(jobSpecs(t, loadConfig(t, `
scrape_configs:
  - job_name: a
    relabel_configs:
      - source_labels: [__address__]
        regex: h1.*
        action: drop
  - job_name: b
    scrape_interval: 30s
`)))
	ch = c.takeChanges()
	require.Equal(t, map[string]struct{}{"b": {}}, ch.jobs)
	puts, dels = c.resolveTargets(slices.Collect(maps.Keys(ch.targets)))
	require.Len(t, puts, 2)
	require.Len(t, dels, 2)
	for _, p := range puts {
		require.Equal(t, "30s", p.Labels["__scrape_interval__"])
		require.Equal(t, c.jobs["b"].event.Hash, p.ConfigHash)
	}

	// Job a goes: the job and its target are deleted.
	c.setJobs(jobSpecs(t, loadConfig(t, `
scrape_configs:
  - job_name: b
    scrape_interval: 30s
`)))
	ch = c.takeChanges()
	jobPuts, jobDels := c.resolveJobs(ch.jobs)
	require.Empty(t, jobPuts)
	require.Equal(t, []string{"a"}, jobDels)
	puts, dels = c.resolveTargets(slices.Collect(maps.Keys(ch.targets)))
	require.Empty(t, puts)
	require.Len(t, dels, 1)
	_, _, ok := c.counts("a")
	require.False(t, ok)
}

func TestCatalogFollowerKeepsNoBacklog(t *testing.T) {
	c := newCatalog()
	c.setJobs(jobSpecs(t, loadConfig(t, "scrape_configs:\n  - job_name: j\n")))
	c.apply([]update{{job: "j", provider: 1, groups: []*targetgroup.Group{tg("g", nil, addr("h1:80"))}}})
	require.True(t, c.takeChanges().empty())
	act, _, _ := c.counts("j")
	require.Equal(t, 1, act, "a follower still keeps the catalog")
}

func TestDiffSnapshot(t *testing.T) {
	c := newCatalog()
	c.setJobs(jobSpecs(t, loadConfig(t, "scrape_configs:\n  - job_name: j\n  - job_name: k\n")))
	c.apply([]update{{job: "j", provider: 1, groups: []*targetgroup.Group{tg("g", nil, addr("h1:80"), addr("h2:80"), addr("h3:80"))}}})
	jobs, desired := c.snapshotDesired()
	require.Len(t, desired, 3)

	byAddr := map[string]desiredTarget{}
	for _, dt := range desired {
		byAddr[dt.labels.Get(model.AddressLabel)] = dt
	}
	hash := func(ev events.Target) uint64 {
		b, err := events.EncodeTarget(ev)
		require.NoError(t, err)
		return events.ValueHash(b)
	}
	stale := byAddr["h2:80"].event()
	stale.ConfigHash = "old"
	snap := events.Snapshot{
		Jobs: map[string]string{"j": jobs["j"], "k": "old", "gone": "x"},
		Targets: map[string]uint64{
			byAddr["h1:80"].event().ID: hash(byAddr["h1:80"].event()), // equal
			stale.ID:                   hash(stale),                   // different
			"00000000000000ff":         42,                            // extra
			// h3 missing
		},
	}
	jobDiff, idDiff, err := diffSnapshot(snap, jobs, desired)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"k", "gone"}, jobDiff)
	require.ElementsMatch(t, []uint64{byAddr["h2:80"].id, byAddr["h3:80"].id, 0xff}, idDiff)
}

func TestIDFormat(t *testing.T) {
	for _, id := range []string{
		events.TargetID("j", map[string]string{"__address__": "h:1"}),
		"0000000000000000", "ffffffffffffffff", "00ab00cd00ef0012",
	} {
		v, err := parseID(id)
		require.NoError(t, err)
		require.Equal(t, id, formatID(v))
	}
	for _, bad := range []string{"", "123", "ABCDEF0123456789", "0x00000000000000", "00000000000000000"} {
		_, err := parseID(bad)
		require.Error(t, err, bad)
	}
}

func TestJobYAMLRoundTrip(t *testing.T) {
	c := loadConfig(t, `
scrape_configs:
  - job_name: secret
    basic_auth:
      username: u
      password: hunter2
    static_configs:
      - targets: [h1:80]
    relabel_configs:
      - target_label: x
        replacement: y
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: drop_me
        action: drop
`)
	// New sets this; the test does what New does.
	setMarshalSecrets()
	scs, err := c.GetScrapeConfigs()
	require.NoError(t, err)
	y, err := jobYAML(scs[0])
	require.NoError(t, err)
	require.Contains(t, y, "hunter2", "scrapers need the real secret")
	require.NotContains(t, y, "static_configs")
	require.NotRegexp(t, `(?m)^relabel_configs:`, y, "relabel_configs are applied by the discoverer")
	require.Contains(t, y, "metric_relabel_configs")

	// A scraper can load it back.
	back, err := config.Load("scrape_configs:\n"+indent(y), nil)
	require.NoError(t, err)
	require.Equal(t, "hunter2", string(back.ScrapeConfigs[0].HTTPClientConfig.BasicAuth.Password))
	require.Empty(t, back.ScrapeConfigs[0].RelabelConfigs)
	require.Len(t, back.ScrapeConfigs[0].MetricRelabelConfigs, 1)
}

// indent makes a YAML mapping the first item of a list.
func indent(y string) string {
	lines := strings.Split(strings.TrimRight(y, "\n"), "\n")
	for i, l := range lines {
		if i == 0 {
			lines[i] = "  - " + l
		} else {
			lines[i] = "    " + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// TestDropReasonsShared checks that targets one rule drops share one reason
// string (a catalog may hold 100k dropped targets), and that a reload that
// changes the rules gives the new rule's reason.
func TestDropReasonsShared(t *testing.T) {
	c := newCatalog()
	c.setJobs(jobSpecs(t, loadConfig(t, `
scrape_configs:
  - job_name: j
    relabel_configs:
      - {source_labels: [__meta_zone], regex: a, action: keep}
`)))
	g := tg("g", nil, addr("h1:80", "__meta_zone", "b"), addr("h2:80", "__meta_zone", "b"), addr("h3:80", "__meta_zone", "a"))
	c.apply([]update{{job: "j", provider: 1, groups: []*targetgroup.Group{g}}})
	_, dropped := c.list()
	require.Len(t, dropped, 2)
	require.Equal(t, `relabel_configs[0] (action keep, source_labels [__meta_zone], regex "a") dropped it`, dropped[0].Reason)
	require.Same(t, unsafe.StringData(dropped[0].Reason), unsafe.StringData(dropped[1].Reason), "one string per rule")

	c.setJobs(jobSpecs(t, loadConfig(t, `
scrape_configs:
  - job_name: j
    relabel_configs:
      - {target_label: x, replacement: y}
      - {source_labels: [__meta_zone], regex: b, action: drop}
`)))
	_, dropped = c.list()
	require.Len(t, dropped, 2)
	for _, d := range dropped {
		require.Equal(t, `relabel_configs[1] (action drop, source_labels [__meta_zone], regex "b") dropped it`, d.Reason)
	}
}
