package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// pageTargets is a catalog merged with two scrapers' reports: three jobs,
// up, down and unowned targets, a dropped target, and a label that tries
// to inject HTML.
func pageTargets() Targets {
	now := time.Now()
	return Merge(Targets{
		ActiveTargets: []ActiveTarget{
			{ID: "a", ScrapePool: "node", ScrapeURL: "http://10.0.0.1:9100/metrics", Labels: map[string]string{"instance": "10.0.0.1:9100"},
				DiscoveredLabels: map[string]string{"__address__": "10.0.0.1:9100", "__meta_kubernetes_pod_name": "node-exporter-a"}},
			{ID: "b", ScrapePool: "node", ScrapeURL: "http://10.0.0.2:9100/metrics", Labels: map[string]string{"instance": "10.0.0.2:9100"}},
			{ID: "c", ScrapePool: "api", ScrapeURL: "http://api:8080/metrics", Labels: map[string]string{"team": "<script>alert(1)</script>"}},
			{ID: "7f3e9a1c2b4d6e80", ScrapePool: "api", ScrapeURL: "http://api-2:8080/metrics", Labels: map[string]string{"instance": "api-2:8080"}},
		},
		DroppedTargets: []DroppedTarget{{ScrapePool: "node", DiscoveredLabels: map[string]string{"__address__": "10.0.0.9:22"},
			Reason: `relabel_configs[0] (action keep, source_labels [__meta_kubernetes_pod_container_port_name], regex "metrics") dropped it`}},
		DroppedTargetCounts: map[string]int{"node": 1},
	},
		Targets{ActiveTargets: []ActiveTarget{
			{ID: "a", ScrapePool: "node", ScrapeURL: "http://10.0.0.1:9100/metrics", Health: "up", Scraper: "scraper-1", LastScrape: now, LastScrapeDuration: 0.012, Series: 1234, ScrapeInterval: "15s"},
			{ID: "c", ScrapePool: "api", ScrapeURL: "http://api:8080/metrics", Health: "down", Scraper: "scraper-2", LastError: "connection refused", Labels: map[string]string{"team": "<script>alert(1)</script>"}},
		}},
		Targets{ActiveTargets: []ActiveTarget{
			{ID: "b", ScrapePool: "node", ScrapeURL: "http://10.0.0.2:9100/metrics", Health: "up", Scraper: "otel-0", Series: 10},
		}},
	)
}

func get(t *testing.T, h http.Handler, target string, hdr ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, err := io.ReadAll(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, string(b)
}

func TestTargetsPageFilters(t *testing.T) {
	h := TargetsPage(TargetSourceFunc(func(context.Context) (Targets, error) { return pageTargets(), nil }))
	for _, tc := range []struct {
		query       string
		has, hasNot []string
		rows        int
	}{
		{"", []string{"scraper-1", "otel-0", "(unowned)", "connection refused", "1234", "12ms", "15s"}, nil, 4},
		{"?job=api", []string{"api-2"}, []string{"10.0.0.1"}, 2},
		{"?pool=api", []string{"api-2"}, []string{"10.0.0.1"}, 2},
		{"?state=down", []string{"connection refused"}, []string{"10.0.0.1:9100/metrics</a>"}, 1},
		{"?scraper=otel-0", []string{"10.0.0.2"}, []string{"api:8080/metrics</a>"}, 1},
		{"?scraper=%28unowned%29", []string{"api-2"}, []string{"10.0.0.1:9100/metrics</a>"}, 1},
		{"?q=refused", []string{"api:8080"}, nil, 1},
		{"?q=10.0.0", nil, []string{"api-2:8080/metrics</a>"}, 2},
		// /cluster links a moved target by its ID.
		{"?q=7f3e9a1c2b4d6e80", []string{"api-2"}, []string{"10.0.0.1:9100/metrics</a>"}, 1},
		{"?limit=1", []string{"Showing the first 1 of 4"}, nil, 1},
	} {
		t.Run(tc.query, func(t *testing.T) {
			code, body := get(t, h, "/targets"+tc.query)
			if code != http.StatusOK {
				t.Fatalf("code %d: %s", code, body)
			}
			for _, s := range tc.has {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(body, s) {
					t.Errorf("page has %q", s)
				}
			}
			if n := strings.Count(body, "<tr>\n<td><a href=\"http"); n != tc.rows {
				t.Errorf("%d target rows, want %d", n, tc.rows)
			}
			if strings.Contains(body, "<script>alert") {
				t.Error("label value not escaped")
			}

			// The JSON form has the same targets (all of them: no limit).
			sep := "?"
			if tc.query != "" {
				sep = "&"
			}
			code, body = get(t, h, "/targets"+tc.query+sep+"format=json")
			var resp struct {
				Status string  `json:"status"`
				Data   Targets `json:"data"`
			}
			if err := json.Unmarshal([]byte(body), &resp); err != nil || code != http.StatusOK || resp.Status != "success" {
				t.Fatalf("JSON form: code %d, err %v: %s", code, err, body)
			}
			want := tc.rows
			if tc.query == "?limit=1" {
				want = 4
			}
			if len(resp.Data.ActiveTargets) != want {
				t.Errorf("JSON form: %d targets, want %d", len(resp.Data.ActiveTargets), want)
			}
		})
	}
}

func TestPagesShowSourceErrors(t *testing.T) {
	partial := TargetSourceFunc(func(context.Context) (Targets, error) {
		return pageTargets(), errors.New("targets from 10.1.1.1:8080: connection refused")
	})
	failed := TargetSourceFunc(func(context.Context) (Targets, error) { return Targets{}, errors.New("etcd unreachable") })
	for _, tc := range []struct {
		name string
		h    http.Handler
		path string
		code int
		has  string
	}{
		{"targets page, partial", TargetsPage(partial), "/targets", 200, "10.1.1.1:8080: connection refused"},
		{"targets JSON, partial", TargetsPage(partial), "/targets?format=json", 200, `"success"`},
		{"targets JSON, failed", TargetsPage(failed), "/targets?format=json", 503, "etcd unreachable"},
		{"sd page, failed", ServiceDiscoveryPage(failed), "/service-discovery", 200, "etcd unreachable"},
		{"sd JSON by Accept, failed", ServiceDiscoveryPage(failed), "/service-discovery", 503, "etcd unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if strings.Contains(tc.name, "Accept") {
				hdr = []string{"Accept", "application/json"}
			}
			code, body := get(t, tc.h, tc.path, hdr...)
			if code != tc.code || !strings.Contains(body, tc.has) {
				t.Errorf("code %d, want %d; body has %q: %v", code, tc.code, tc.has, strings.Contains(body, tc.has))
			}
		})
	}
}

func TestServiceDiscoveryPage(t *testing.T) {
	h := ServiceDiscoveryPage(TargetSourceFunc(func(context.Context) (Targets, error) { return pageTargets(), nil }))
	for _, tc := range []struct {
		query       string
		has, hasNot []string
	}{
		{"", []string{`__meta_kubernetes_pod_name=&#34;node-exporter-a&#34;`, `instance=&#34;10.0.0.1:9100&#34;`, "dropped", `relabel_configs[0] (action keep, source_labels [__meta_kubernetes_pod_container_port_name], regex &#34;metrics&#34;) dropped it`, "1 dropped"}, nil},
		{"?show=dropped", []string{"10.0.0.9:22", "action keep"}, []string{"node-exporter-a"}},
		{"?show=active", []string{"node-exporter-a"}, []string{"10.0.0.9:22"}},
		{"?job=api", []string{"api-2"}, []string{"node-exporter-a", "10.0.0.9:22"}},
		{"?q=keep", []string{"10.0.0.9:22"}, []string{"node-exporter-a"}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			code, body := get(t, h, "/service-discovery"+tc.query)
			if code != http.StatusOK {
				t.Fatalf("code %d", code)
			}
			for _, s := range tc.has {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(body, s) {
					t.Errorf("page has %q", s)
				}
			}
		})
	}
	_, body := get(t, h, "/service-discovery?show=dropped&format=json")
	var resp struct {
		Data Targets `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Data.ActiveTargets) != 0 || len(resp.Data.DroppedTargets) != 1 || resp.Data.DroppedTargets[0].Reason == "" {
		t.Errorf("JSON form: %+v", resp.Data)
	}
}

func pageCluster() Cluster {
	now := time.Now()
	return Cluster{
		Leader: "rebalancer-0", Updated: now.Add(-2 * time.Second), Targets: 3,
		BalanceRatio: 1.042, ByCountRatio: 1.5, Recommended: 2, PendingMoves: 1,
		Members: []ClusterMember{
			{ID: "scraper-2", Addr: "10.0.1.2:8080", Zone: "b", Weight: 1, Targets: 1, Series: 120000, SamplesPerSecond: 8000, LoadUpdated: now},
			{ID: "scraper-1", Addr: "10.0.1.1:8080", Zone: "a", Weight: 1, Targets: 1, Series: 98000, Draining: true},
			{ID: "otel-0", Kind: "collector", Addr: "10.0.2.7", Weight: 1, Targets: 1},
		},
		Moves:     []ClusterMove{{Time: now.Add(-time.Minute), Target: "0a8f0c3d5e6b7a91", From: "scraper-1", To: "scraper-2", Reason: "balance", Duration: 180 * time.Millisecond, Outcome: "completed"}},
		Failovers: []Failover{{Time: now.Add(-5 * time.Minute), Member: "scraper-3", Targets: 412}},
		Errors:    []string{"load report of scraper-1 is 2m old"},
	}
}

func TestClusterPage(t *testing.T) {
	src := ClusterSourceFunc(func(context.Context) (Cluster, error) { return pageCluster(), nil })
	code, body := get(t, ClusterPage(src), "/cluster")
	if code != http.StatusOK {
		t.Fatalf("code %d: %s", code, body)
	}
	for _, s := range []string{"rebalancer-0", "1.042", "scraper-1", "draining", "otel-0", "collector", "120.0k", "0a8f0c3d5e6b7a91", "completed", "scraper-3", "412", "2m old", "width:100.0%"} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	if i, j := strings.Index(body, ">otel-0<"), strings.Index(body, ">scraper-1<"); i < 0 || j < 0 || i > j {
		t.Error("members not sorted by ID")
	}

	// What `allot status` reads from /api/v1/cluster, from both JSON forms.
	type status struct {
		Leader      string  `json:"leader"`
		Balance     float64 `json:"balance_ratio"`
		Recommended int     `json:"recommended_scrapers"`
		Scrapers    []struct {
			ID       string  `json:"id"`
			Targets  int     `json:"targets"`
			Series   float64 `json:"series"`
			Draining bool    `json:"draining"`
		} `json:"scrapers"`
	}
	_, body = get(t, ClusterPage(src), "/cluster?format=json")
	var env struct {
		Status string `json:"status"`
		Data   status `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil || env.Status != "success" {
		t.Fatalf("JSON form: %v: %s", err, body)
	}
	_, body = get(t, ClusterAPI(src), "/api/v1/cluster")
	var bare status
	if err := json.Unmarshal([]byte(body), &bare); err != nil {
		t.Fatal(err)
	}
	for _, st := range []status{env.Data, bare} {
		if st.Leader != "rebalancer-0" || st.Balance != 1.042 || st.Recommended != 2 || len(st.Scrapers) != 3 || st.Scrapers[2].ID != "scraper-2" || st.Scrapers[2].Series != 120000 {
			t.Errorf("status = %+v", st)
		}
	}

	empty := ClusterSourceFunc(func(context.Context) (Cluster, error) { return Cluster{}, nil })
	if code, body := get(t, ClusterPage(empty), "/cluster"); code != 200 || !strings.Contains(body, "No members") {
		t.Errorf("empty cluster: %d", code)
	}
	if _, body := get(t, ClusterAPI(empty), "/api/v1/cluster"); !strings.Contains(body, `"scrapers":[]`) {
		t.Errorf("empty cluster JSON: %s", body)
	}
}

func TestFailoverLog(t *testing.T) {
	l := &FailoverLog{Size: 2}
	t0 := time.Now()
	m := func(id string, targets int) ClusterMember { return ClusterMember{ID: id, Targets: targets} }
	steps := []struct {
		members []ClusterMember
		want    []string // member IDs newest first
	}{
		{[]ClusterMember{m("a", 5), m("b", 7), m("c", 1)}, nil},
		{[]ClusterMember{m("a", 6), m("c", 1)}, []string{"b"}},
		{[]ClusterMember{m("a", 6), m("c", 1), m("d", 0)}, []string{"b"}},
		{[]ClusterMember{m("d", 3)}, []string{"c", "a"}}, // kept to Size, b falls out
	}
	for i, s := range steps {
		l.Observe(t0.Add(time.Duration(i)*time.Second), s.members)
		got := l.Recent()
		var ids []string
		for _, f := range got {
			ids = append(ids, f.Member)
		}
		if strings.Join(ids, ",") != strings.Join(s.want, ",") {
			t.Fatalf("step %d: failovers %v, want %v", i, ids, s.want)
		}
	}
	if f := l.Recent()[1]; f.Targets != 6 {
		t.Errorf("a left with %d targets, want the 6 it had when last seen", f.Targets)
	}
}

func TestConfigPageRedacts(t *testing.T) {
	const cfg = `global:
  scrape_interval: 15s
scrape_configs:
- job_name: secured
  basic_auth:
    username: allot
    password: hunter2
    password_file: /etc/pw
  authorization:
    type: Bearer
    credentials: tok-123
  oauth2:
    client_id: id
    client_secret: cs-456
    token_url: https://auth/token
  tls_config:
    key: "-----BEGIN PRIVATE KEY-----"
    key_file: /etc/tls.key
  proxy_connect_header:
    Proxy-Authorization: [pa-789]
  http_headers:
    X-Api:
      secrets: [h-000]
      values: [visible-value]
exporters:
  otlp:
    headers:
      X-Scope-OrgID: tenant-secret
    api_key: k-111
    empty_password: ""
`
	h := ConfigPage(func() (EffectiveConfig, error) { return EffectiveConfig{YAML: cfg}, nil })
	for _, format := range []string{"", "?format=yaml", "?format=json"} {
		t.Run(format, func(t *testing.T) {
			code, body := get(t, h, "/config"+format)
			if code != 200 {
				t.Fatalf("code %d: %s", code, body)
			}
			for _, s := range []string{"hunter2", "tok-123", "cs-456", "BEGIN PRIVATE KEY", "pa-789", "h-000", "tenant-secret", "k-111"} {
				if strings.Contains(body, s) {
					t.Errorf("secret %q shown", s)
				}
			}
			for _, s := range []string{"/etc/pw", "Bearer", "https://auth/token", "/etc/tls.key", "visible-value", "allot", "15s"} {
				if !strings.Contains(body, s) {
					t.Errorf("%q hidden", s)
				}
			}
		})
	}
	_, body := get(t, h, "/config?format=json")
	var resp struct {
		Data struct {
			YAML string `json:"yaml"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || strings.Count(resp.Data.YAML, "<secret>") != 8 {
		t.Errorf("JSON form: %v, %d secrets redacted, want 8:\n%s", err, strings.Count(resp.Data.YAML, "<secret>"), resp.Data.YAML)
	}
	if code, _ := get(t, ConfigPage(func() (EffectiveConfig, error) { return EffectiveConfig{}, errors.New("no config") }), "/config"); code != 500 {
		t.Errorf("failing source: code %d", code)
	}
	if code, _ := get(t, ConfigPage(func() (EffectiveConfig, error) { return EffectiveConfig{YAML: "a: ["}, nil }), "/config"); code != 500 {
		t.Errorf("unparsable config: code %d (it must not be shown unredacted)", code)
	}
}

// TestConfigPageNote: a process without a scrape configuration (a
// rebalancer) answers 200 with a note in every form, not an error.
func TestConfigPageNote(t *testing.T) {
	const note = "This process runs the rebalancer only."
	h := ConfigPage(func() (EffectiveConfig, error) {
		return EffectiveConfig{YAML: "rebalancer:\n  tolerance: 0.1\n", Note: note}, nil
	})
	for _, tc := range []struct{ query, has string }{
		{"", note},
		{"?format=yaml", "# " + note + "\nrebalancer:"},
		{"?format=json", `"note":"` + note + `"`},
	} {
		code, body := get(t, h, "/config"+tc.query)
		if code != 200 || !strings.Contains(body, tc.has) || !strings.Contains(body, "tolerance") {
			t.Errorf("%q: code %d, body lacks %q or the YAML:\n%s", tc.query, code, tc.has, body)
		}
	}
	empty := ConfigPage(func() (EffectiveConfig, error) { return EffectiveConfig{Note: note}, nil })
	if code, body := get(t, empty, "/config"); code != 200 || !strings.Contains(body, note) || strings.Contains(body, "<pre>") {
		t.Errorf("note only: code %d:\n%s", code, body)
	}
}
