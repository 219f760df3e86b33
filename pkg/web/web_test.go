package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func catalogAndOwned() (Targets, Targets, Targets) {
	catalog := Targets{
		ActiveTargets: []ActiveTarget{
			{ID: "a", ScrapePool: "job", ScrapeURL: "http://h:1/metrics", DiscoveredLabels: map[string]string{"__address__": "h:1"}},
			{ID: "b", ScrapePool: "job", ScrapeURL: "http://h:2/metrics"},
			{ID: "c", ScrapePool: "other", ScrapeURL: "http://h:3/metrics"},
		},
		DroppedTargets: []DroppedTarget{{ScrapePool: "job", DiscoveredLabels: map[string]string{"__address__": "x:1"}, Reason: "relabel_configs dropped it"}},
	}
	s1 := Targets{ActiveTargets: []ActiveTarget{{ID: "a", ScrapePool: "job", ScrapeURL: "http://h:1/metrics", Health: "up", Scraper: "s1", LastScrape: time.Now()}}}
	s2 := Targets{ActiveTargets: []ActiveTarget{{ID: "c", ScrapePool: "other", ScrapeURL: "http://h:3/metrics", Health: "down", Scraper: "s2", LastError: "connection refused"}}}
	return catalog, s1, s2
}

func TestMerge(t *testing.T) {
	catalog, s1, s2 := catalogAndOwned()
	got := Merge(catalog, s1, s2)
	want := map[string]struct{ health, scraper string }{
		"a": {"up", "s1"}, "b": {"unknown", ""}, "c": {"down", "s2"},
	}
	if len(got.ActiveTargets) != len(want) {
		t.Fatalf("%d targets, want %d", len(got.ActiveTargets), len(want))
	}
	for _, a := range got.ActiveTargets {
		w := want[a.ID]
		if a.Health != w.health || a.Scraper != w.scraper {
			t.Errorf("target %s: health %q scraper %q, want %q %q", a.ID, a.Health, a.Scraper, w.health, w.scraper)
		}
	}
	if got.ActiveTargets[0].DiscoveredLabels["__address__"] != "h:1" {
		t.Errorf("discovered labels of the catalog not kept: %v", got.ActiveTargets[0].DiscoveredLabels)
	}
	if len(got.DroppedTargets) != 1 {
		t.Errorf("dropped = %v", got.DroppedTargets)
	}
}

func TestTargetsAPIAndFilter(t *testing.T) {
	catalog, s1, s2 := catalogAndOwned()
	src := TargetSourceFunc(func(context.Context) (Targets, error) { return Merge(catalog, s1, s2), nil })
	srv := httptest.NewServer(TargetsAPI(src))
	defer srv.Close()
	for _, tc := range []struct {
		query       string
		active, drp int
	}{
		{"", 3, 1},
		{"?state=active", 3, 0},
		{"?state=dropped", 0, 1},
		{"?scrapePool=other", 1, 0 + 0},
		{"?scraper=s1", 1, 0},
	} {
		t.Run(tc.query, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Status string  `json:"status"`
				Data   Targets `json:"data"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if body.Status != "success" || len(body.Data.ActiveTargets) != tc.active || len(body.Data.DroppedTargets) != tc.drp {
				t.Errorf("status %s, %d active, %d dropped; want %d, %d", body.Status, len(body.Data.ActiveTargets), len(body.Data.DroppedTargets), tc.active, tc.drp)
			}
		})
	}
}

func TestRemoteFetchNamesFailures(t *testing.T) {
	_, s1, _ := catalogAndOwned()
	ok := httptest.NewServer(TargetsAPI(TargetSourceFunc(func(context.Context) (Targets, error) { return s1, nil })))
	defer ok.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer broken.Close()
	got, err := Remote{}.Fetch(t.Context(), []string{strings.TrimPrefix(ok.URL, "http://"), strings.TrimPrefix(broken.URL, "http://")})
	if len(got) != 1 || len(got[0].ActiveTargets) != 1 {
		t.Fatalf("got %v", got)
	}
	if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(broken.URL, "http://")) {
		t.Fatalf("err = %v, want it to name the broken address", err)
	}
}

func TestTargetsPageShowsOwner(t *testing.T) {
	catalog, s1, s2 := catalogAndOwned()
	srv := httptest.NewServer(TargetsPage(TargetSourceFunc(func(context.Context) (Targets, error) { return Merge(catalog, s1, s2), nil })))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/targets")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, frag := range []string{"s1", "s2", "connection refused", `class="up"`, "(unowned)"} {
		if !strings.Contains(string(b), frag) {
			t.Errorf("page lacks %q", frag)
		}
	}
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		waiting []string
		code    int
	}{{nil, 200}, {[]string{"scraper"}, 503}} {
		rec := httptest.NewRecorder()
		Ready(func() []string { return tc.waiting }).ServeHTTP(rec, httptest.NewRequest("GET", "/-/ready", nil))
		if rec.Code != tc.code {
			t.Errorf("waiting %v: code %d, want %d", tc.waiting, rec.Code, tc.code)
		}
	}
}

// TestRemoteFetchOfItself serves a merged view whose peer list names the
// server itself, as happens when a peer advertises an address that reaches
// the asker: the peer request (scope=local) must not fan out again.
func TestRemoteFetchOfItself(t *testing.T) {
	catalog, s1, _ := catalogAndOwned()
	var requests atomic.Int32
	var self string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		TargetsAPI(TargetSourceFunc(func(ctx context.Context) (Targets, error) {
			if LocalScope(ctx) {
				return s1, nil
			}
			owned, err := Remote{}.Fetch(ctx, []string{self})
			return Merge(catalog, owned...), err
		})).ServeHTTP(w, r)
	}))
	defer srv.Close()
	self = strings.TrimPrefix(srv.URL, "http://")

	resp, err := http.Get(srv.URL + "/api/v1/targets")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("%d requests served, want 2 (the view and one local peer request)", n)
	}
}

// TestTargetsAPIWarnings: a scraper that does not answer makes the answer
// incomplete, not failed: 200, what the others gave, and a warning naming
// it. Only a source that gives nothing for another reason answers 503.
func TestTargetsAPIWarnings(t *testing.T) {
	catalog, s1, _ := catalogAndOwned()
	up := httptest.NewServer(TargetsAPI(TargetSourceFunc(func(context.Context) (Targets, error) { return s1, nil })))
	defer up.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	downAddr := strings.TrimPrefix(down.URL, "http://")
	down.Close()
	upAddr := strings.TrimPrefix(up.URL, "http://")
	fanOut := func(cat Targets, addrs ...string) TargetSource {
		return TargetSourceFunc(func(ctx context.Context) (Targets, error) {
			owned, err := Remote{}.Fetch(ctx, addrs)
			return Merge(cat, owned...), err
		})
	}
	for _, tc := range []struct {
		name     string
		src      TargetSource
		code     int
		active   int
		warnings []string
	}{
		{"all answer", fanOut(catalog, upAddr), 200, 3, nil},
		{"one scraper down", fanOut(catalog, upAddr, downAddr), 200, 3, []string{downAddr}},
		{"empty catalog, scraper down", fanOut(Targets{}, downAddr), 200, 0, []string{downAddr}},
		{"nothing, and not a peer", TargetSourceFunc(func(context.Context) (Targets, error) {
			return Targets{}, errors.New("list members: etcd unreachable")
		}), 503, 0, nil},
		{"catalog, members not listed", TargetSourceFunc(func(context.Context) (Targets, error) {
			return catalog, errors.New("list members: etcd unreachable")
		}), 200, 3, []string{"etcd unreachable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, TargetsAPI(tc.src), "/api/v1/targets")
			if code != tc.code {
				t.Fatalf("code %d, want %d: %s", code, tc.code, body)
			}
			if code != 200 {
				return
			}
			var resp struct {
				Status   string   `json:"status"`
				Data     Targets  `json:"data"`
				Warnings []string `json:"warnings"`
			}
			if err := json.Unmarshal([]byte(body), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Status != "success" || len(resp.Data.ActiveTargets) != tc.active || len(resp.Warnings) != len(tc.warnings) {
				t.Fatalf("status %s, %d targets, warnings %q; want %d targets, warnings naming %q", resp.Status, len(resp.Data.ActiveTargets), resp.Warnings, tc.active, tc.warnings)
			}
			for i, w := range tc.warnings {
				if !strings.Contains(resp.Warnings[i], w) {
					t.Errorf("warning %q does not name %q", resp.Warnings[i], w)
				}
			}
			if tc.warnings == nil && strings.Contains(body, "warnings") {
				t.Errorf("warnings field on a complete answer: %s", body)
			}
		})
	}
}

// TestFillOwners: targets no scraper reports on (an OTel collector's) take
// their owner from the claims; health stays unknown, and a scraper's own
// report is never overridden.
func TestFillOwners(t *testing.T) {
	catalog, s1, _ := catalogAndOwned()
	claims := map[string]string{"a": "stale-owner", "b": "otel-1"}
	got := FillOwners(Merge(catalog, s1), func(id string) (string, bool) { o, ok := claims[id]; return o, ok })
	want := map[string][2]string{"a": {"s1", "up"}, "b": {"otel-1", "unknown"}, "c": {"", "unknown"}}
	for _, a := range got.ActiveTargets {
		if w := want[a.ID]; a.Scraper != w[0] || a.Health != w[1] {
			t.Errorf("target %s: scraper %q health %q, want %q %q", a.ID, a.Scraper, a.Health, w[0], w[1])
		}
	}
	code, body := get(t, TargetsPage(TargetSourceFunc(func(context.Context) (Targets, error) { return got, nil })), "/targets?scraper=otel-1")
	if code != 200 || !strings.Contains(body, "http://h:2/metrics") || strings.Contains(body, "http://h:1/metrics</a>") {
		t.Errorf("filter by the collector: code %d\n%s", code, body)
	}
}
