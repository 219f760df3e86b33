package targetallocator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	promhttp "github.com/prometheus/prometheus/discovery/http"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

var jobNames = []string{"node", "job/with space", "api"}

// pollAll polls like running collectors do: one /scrape_configs sync and
// one HTTP SD refresh each, concurrently.
func pollAll(t *testing.T, cs ...*otelCollector) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := c.sync(); err != nil {
				t.Logf("collector %s: scrape configs: %v", c.id, err)
				return
			}
			if err := c.refresh(t.Context()); err != nil {
				t.Logf("collector %s: refresh: %v", c.id, err)
			}
		})
	}
	wg.Wait()
}

func TestCollectorsShareTargetsAndTakeOverWhenOneStops(t *testing.T) {
	// The product's ratio of collector TTL to poll interval:
	// DefaultCollectorTTL against the Collector's default 30 s HTTP SD
	// refresh, here with 1 s polls.
	const (
		poll        = time.Second
		defaultPoll = 30 * time.Second
		// After the TTL: the expiry check (every TTL/10), the claims,
		// then the others' next poll; one poll more of slack for a loaded
		// CI machine (measured: 1.25 s after the TTL on 2 idle cores).
		handoffBudget = 3 * poll
	)
	ttl := DefaultCollectorTTL / defaultPoll * poll
	require.Equal(t, 3*poll, ttl)

	e := newEnv(t)
	want := e.publish(t, 20, jobNames...)
	// Settle is the product's default: collectors starting together must
	// split the targets with it, and it is part of the hand-off.
	api, srv := e.start(t, Config{CollectorTTL: ttl})

	cs := []*otelCollector{
		newCollector(srv.URL, "collector-0", nil),
		newCollector(srv.URL, "collector-1", nil),
		newCollector(srv.URL, "collector-2", nil),
	}
	// Collectors that start together split the targets on their first
	// polls: the first poll of each waits for the round that claims for it.
	pollAll(t, cs...)
	ok, why := coverage(want, cs...)
	require.True(t, ok, "after the first polls: %s", why)
	for _, c := range cs {
		n := len(c.owned())
		require.NotZero(t, n, "collector %s got nothing", c.id)
		t.Logf("collector %s owns %d of %d targets", c.id, n, len(want))
	}
	require.Len(t, api.Collectors(), 3)
	members, _, err := leases.ListMembers(t.Context(), e.etcd, e.ks)
	require.NoError(t, err)
	require.Len(t, members, 3)
	for _, m := range members {
		require.Equal(t, leases.KindCollector, m.Kind, "member %s", m.ID)
	}

	// collector-2 stops polling; the hand-off is counted from its last
	// poll as the API saw it. The other two poll every interval, as the
	// Collector's HTTP SD does, and the hand-off is done when their polls
	// cover every target.
	var lastPoll time.Time
	for _, c := range api.Collectors() {
		if c.ID == "collector-2" {
			lastPoll = c.LastPoll
		}
	}
	require.False(t, lastPoll.IsZero())
	deadline := lastPoll.Add(ttl + handoffBudget)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var handoff time.Duration
	for handoff == 0 {
		<-tick.C
		pollAll(t, cs[:2]...)
		if ok, why := coverage(want, cs[:2]...); ok {
			handoff = time.Since(lastPoll)
		} else if time.Now().After(deadline) {
			t.Fatalf("collector-2's targets not with the others %s after its last poll (TTL %s, polls every %s): %s",
				time.Since(lastPoll).Round(time.Millisecond), ttl, poll, why)
		}
	}
	t.Logf("collector-2 stopped polling; its targets were with the others %s after its last poll (TTL %s, polls every %s)",
		handoff.Round(time.Millisecond), ttl, poll)
	require.Less(t, handoff, ttl+handoffBudget, "hand-off took longer than the TTL and two polls")

	members, _, err = leases.ListMembers(t.Context(), e.etcd, e.ks)
	require.NoError(t, err)
	require.Len(t, members, 2, "collector-2's member entry must be gone")
	claims, _, err := leases.ListClaims(t.Context(), e.etcd, e.ks)
	require.NoError(t, err)
	for _, cl := range claims {
		require.NotEqual(t, "collector-2", cl.Owner)
	}
}

func TestFirstPollAnswersTheCollectorsShare(t *testing.T) {
	e := newEnv(t)
	want := e.publish(t, 15, jobNames...)
	_, srv := e.start(t, Config{})
	c := newCollector(srv.URL, "only", nil)
	require.NoError(t, c.sync())
	// One collector, no scrapers: it is preferred for every slot, and its
	// very first answer must carry all of it.
	require.NoError(t, c.refresh(t.Context()))
	ok, why := coverage(want, c)
	require.True(t, ok, why)
}

func TestScrapeConfigs(t *testing.T) {
	e := newEnv(t)
	e.publish(t, 2, jobNames...)
	api, srv := e.start(t, Config{})
	tlsSrv := httptest.NewUnstartedServer(api.Handler())
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)

	for _, tc := range []struct {
		name       string
		endpoint   string
		client     *http.Client
		wantSecret bool
	}{
		{"plain HTTP redacts secrets", srv.URL, http.DefaultClient, false},
		{"TLS shows secrets", tlsSrv.URL, tlsClient(tlsSrv), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.client.Get(tc.endpoint + "/scrape_configs")
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			require.NotEmpty(t, resp.Header.Get("ETag"))
			if tc.wantSecret {
				require.Contains(t, string(b), "s3cret-password")
			} else {
				require.NotContains(t, string(b), "s3cret-password")
				require.Contains(t, string(b), `"password":"<secret>"`)
			}

			// The receiver parses it and validates every job with its
			// http_sd_config in place (keepequal included).
			c := newCollector(tc.endpoint, "c", tc.client)
			require.NoError(t, c.sync())
			require.Len(t, c.jobs, len(jobNames))
			for _, job := range jobNames {
				sc := c.jobs[job]
				require.NotNil(t, sc, job)
				require.Equal(t, job, sc.JobName)
				require.Empty(t, sc.RelabelConfigs, "relabelling was done by the discoverer")
				require.Len(t, sc.MetricRelabelConfigs, 1)
				require.Equal(t, "s3cret-password" == string(sc.HTTPClientConfig.BasicAuth.Password), tc.wantSecret)
			}
		})
	}
}

func TestKeepEqualRegexIsDropped(t *testing.T) {
	// A keepequal rule with a regex, as older Prometheus versions marshal
	// it (prometheus/prometheus#12534): Prometheus refuses to load it, so
	// toJSON drops the key as the Target Allocator does.
	const y = `job_name: j
metric_relabel_configs:
- source_labels: [a]
  target_label: b
  action: keepequal
  regex: (.*)
`
	var broken promconfig.ScrapeConfig
	err := yaml.Unmarshal([]byte(y), &broken)
	if err == nil {
		err = broken.Validate(promconfig.DefaultGlobalConfig)
	}
	require.Error(t, err, "Prometheus accepts keepequal with a regex now; the workaround may go")

	fixed, err := toJSON([]byte(y))
	require.NoError(t, err)
	require.NotContains(t, string(fixed), "regex")
	var sc promconfig.ScrapeConfig
	require.NoError(t, yaml.Unmarshal(fixed, &sc))
	require.NoError(t, sc.Validate(promconfig.DefaultGlobalConfig))
}

func TestNotReadyIsNoChangeForTheCollector(t *testing.T) {
	e := newEnv(t)
	_, srv := e.newAPI(t, Config{}) // never run: never ready

	// What the receiver would do with an empty answer: an empty map and
	// no error, so it would drop every job it has.
	empty := map[string]*promconfig.ScrapeConfig{}
	require.NoError(t, yaml.Unmarshal(nil, &empty))
	require.Empty(t, empty)

	m, code, err := fetchScrapeConfigs(http.DefaultClient, srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Error(t, err, "the 503 body must fail to parse, so the receiver keeps its jobs")
	require.Nil(t, m)

	// HTTP SD treats anything but 200 as a failed refresh and keeps the
	// targets it has.
	sd := promhttp.DefaultSDConfig
	sd.URL = srv.URL + "/jobs/node/targets?collector_id=c"
	c := newCollector(srv.URL, "c", nil)
	c.jobs = map[string]*promconfig.ScrapeConfig{"node": {JobName: "node", ServiceDiscoveryConfigs: discovery.Configs{&sd}}}
	err = c.refresh(t.Context())
	require.ErrorContains(t, err, "503")
}

func TestJobsLinksEscapingAndETags(t *testing.T) {
	e := newEnv(t)
	want := e.publish(t, 5, jobNames...)
	_, srv := e.start(t, Config{})

	get := func(path string, hdr http.Header) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, b
	}

	resp, b := get("/jobs", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var jobs map[string]struct {
		Link string `json:"_link"`
	}
	require.NoError(t, json.Unmarshal(b, &jobs))
	require.Len(t, jobs, len(jobNames))
	require.Equal(t, "/jobs/job%2Fwith+space/targets", jobs["job/with space"].Link)

	// The link, with a collector_id as the Collector appends it.
	path := jobs["job/with space"].Link + "?collector_id=collector-a"
	resp, b = get(path, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	require.NoError(t, json.Unmarshal(b, &groups))
	require.Len(t, groups, 5, "the only collector owns the whole job")
	for _, g := range groups {
		require.Len(t, g.Targets, 1)
		require.Contains(t, want, "job/with space|"+g.Targets[0])
		require.Equal(t, "job/with space", g.Labels["job"])
	}
	etag := resp.Header.Get("ETag")
	require.NotEmpty(t, etag)

	for _, tc := range []struct {
		name  string
		inm   string
		code  int
		empty bool
	}{
		{"same ETag", etag, http.StatusNotModified, true},
		{"one of several", `"x", ` + etag, http.StatusNotModified, true},
		{"other ETag", `"other"`, http.StatusOK, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := get(path, http.Header{"If-None-Match": {tc.inm}})
			require.Equal(t, tc.code, resp.StatusCode)
			require.Equal(t, tc.empty, len(b) == 0)
			require.Equal(t, etag, resp.Header.Get("ETag"))
		})
	}

	// A change to the job changes the answer and its ETag.
	extra := target("job/with space", 99)
	require.NoError(t, e.pub.PutTargets(t.Context(), []events.Target{extra}))
	require.Eventually(t, func() bool {
		resp, b := get(path, http.Header{"If-None-Match": {etag}})
		return resp.StatusCode == http.StatusOK && strings.Contains(string(b), extra.Labels["__address__"])
	}, waitFor, 50*time.Millisecond)

	// Without collector_id: every owner and its targets.
	resp, b = get(jobs["node"].Link, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var byOwner map[string]struct {
		Link    string            `json:"_link"`
		Targets []json.RawMessage `json:"targets"`
	}
	require.NoError(t, json.Unmarshal(b, &byOwner))
	require.Len(t, byOwner["collector-a"].Targets, 5)
	require.Equal(t, "/jobs/node/targets?collector_id=collector-a", byOwner["collector-a"].Link)

	// An unknown job is an empty list, not an error.
	resp, b = get("/jobs/nope/targets?collector_id=collector-a", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `[]`, string(b))
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	e.publish(t, 1, "node")
	_, srv := e.start(t, Config{})
	registerMember(t, e, "scraper-1", leases.KindScraper)
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/jobs/node/targets?collector_id=", http.StatusBadRequest},
		{http.MethodGet, "/jobs/node/targets?collector_id=a/b", http.StatusBadRequest},
		{http.MethodGet, "/jobs/node/targets?collector_id=scraper-1", http.StatusConflict},
		{http.MethodGet, "/jobs/node", http.StatusNotFound},
		{http.MethodPost, "/scrape_configs", http.StatusMethodNotAllowed},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, tc.code, resp.StatusCode)
		})
	}
}

// registerMember registers a member that claims nothing, for as long as
// the test runs.
func registerMember(t *testing.T, e *env, id, kind string) *leases.Session {
	t.Helper()
	s, err := leases.NewSession(context.Background(), e.etcd, leases.SessionConfig{TTL: 2 * time.Second}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, leases.Register(t.Context(), s, e.ks, leases.Member{ID: id, Kind: kind, Weight: 1}))
	return s
}

func TestMoveToCollectorIsTakenOver(t *testing.T) {
	e := newEnv(t)
	want := e.publish(t, 10, jobNames...)
	_, srv := e.start(t, Config{})
	a, b := newCollector(srv.URL, "collector-a", nil), newCollector(srv.URL, "collector-b", nil)
	pollAll(t, a, b)
	ok, why := coverage(want, a, b)
	require.True(t, ok, why)

	// Move one of a's targets to b, as the rebalancer does.
	claims, _, err := leases.ListClaims(t.Context(), e.etcd, e.ks)
	require.NoError(t, err)
	var moved leases.Claim
	for _, cl := range claims {
		if cl.Owner == "collector-a" {
			moved = cl
			break
		}
	}
	require.NotEmpty(t, moved.Target, "collector-a owns nothing")
	reb := registerMember(t, e, "rebalancer", leases.KindScraper)
	require.NoError(t, leases.StartMove(t.Context(), reb, e.ks, leases.Move{
		Target: moved.Target, From: "collector-a", To: "collector-b", Epoch: moved.Epoch,
		Deadline: time.Now().Add(time.Minute), Reason: "test",
	}))
	var key string
	for k, tg := range want {
		if tg.ID == moved.Target {
			key = k
		}
	}
	require.Eventually(t, func() bool {
		pollAll(t, a, b)
		ok, _ := coverage(want, a, b)
		return ok && contains(b.owned(), key)
	}, waitFor, 100*time.Millisecond, "the move was not taken over for collector-b")
	moves, err := leases.ListMoves(t.Context(), e.etcd, e.ks)
	require.NoError(t, err)
	require.Empty(t, moves)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestRemovedTargetsAreReleased(t *testing.T) {
	e := newEnv(t)
	want := e.publish(t, 5, "node")
	_, srv := e.start(t, Config{})
	c := newCollector(srv.URL, "c", nil)
	pollAll(t, c)
	ok, why := coverage(want, c)
	require.True(t, ok, why)

	gone := target("node", 0)
	require.NoError(t, e.pub.DeleteTargets(t.Context(), []string{gone.ID}))
	delete(want, "node|"+gone.Labels["__address__"])
	require.Eventually(t, func() bool {
		_, found, err := leasesOwner(t, e, gone.ID)
		require.NoError(t, err)
		pollAll(t, c)
		ok, _ := coverage(want, c)
		return !found && ok
	}, waitFor, 50*time.Millisecond)
}

func leasesOwner(t *testing.T, e *env, target string) (string, bool, error) {
	resp, err := e.etcd.Get(t.Context(), e.ks.Claim(target))
	if err != nil || len(resp.Kvs) == 0 {
		return "", false, err
	}
	var v leases.ClaimValue
	require.NoError(t, json.Unmarshal(resp.Kvs[0].Value, &v))
	return v.Owner, true, nil
}

func TestGraceClaimsWhatThePreferredOwnerLeaves(t *testing.T) {
	e := newEnv(t)
	want := e.publish(t, 30, "node")
	// A member that never claims: the slots it is preferred for stay
	// unowned, until the grace ends and the API claims them for its
	// collector.
	registerMember(t, e, "idle-scraper", leases.KindScraper)
	_, srv := e.start(t, Config{ClaimGrace: time.Second})
	c := newCollector(srv.URL, "c", nil)
	pollAll(t, c)
	first := len(c.owned())
	require.Less(t, first, len(want), "the idle scraper should be preferred for some targets")
	start := time.Now()
	require.Eventually(t, func() bool {
		pollAll(t, c)
		ok, _ := coverage(want, c)
		return ok
	}, waitFor, 100*time.Millisecond)
	t.Logf("first answer %d of %d targets; all after %s (grace 1s)", first, len(want), time.Since(start).Round(time.Millisecond))
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{CollectorTTL: time.Second}, false},
		{Config{ClaimGrace: -time.Second}, false},
		{Config{Events: events.Config{JobsBucket: "x", TargetsBucket: "x"}}, false},
	} {
		t.Run(fmt.Sprintf("%+v", tc.cfg), func(t *testing.T) {
			require.Equal(t, tc.ok, tc.cfg.Validate() == nil)
		})
	}
}

func TestCollectorIDFromRawQuery(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		id      string
		present bool
		err     bool
	}{
		{"collector_id=otel-0", "otel-0", true, false},
		{"a=b&collector_id=otel.ns_1:x@y", "otel.ns_1:x@y", true, false},
		{"collector_id=otel%2D0", "otel-0", true, false},
		{"", "", false, false},
		{"collector_id=", "", true, true},
		{"collector_id=a+b", "", true, true},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			id, present, err := collectorID(tc.raw)
			require.Equal(t, tc.id, id)
			require.Equal(t, tc.present, present)
			require.Equal(t, tc.err, err != nil)
		})
	}
}

func TestRestartKeepsServingConfigsAndAssignments(t *testing.T) {
	e := newEnv(t)
	want := e.publish(t, 10, jobNames...)

	// A front that stays while the API behind it is replaced, as a
	// Kubernetes Service in front of a restarted pod.
	var current sync.Map
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, _ := current.Load("h")
		h.(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	first, _ := e.newAPI(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	require.Eventually(t, first.Ready, waitFor, 10*time.Millisecond)
	current.Store("h", first.Handler())

	cs := []*otelCollector{newCollector(front.URL, "a", nil), newCollector(front.URL, "b", nil)}
	pollAll(t, cs...)
	ok, why := coverage(want, cs...)
	require.True(t, ok, why)
	before, _, err := fetchScrapeConfigs(http.DefaultClient, front.URL)
	require.NoError(t, err)
	resp, err := http.Get(front.URL + "/scrape_configs")
	require.NoError(t, err)
	resp.Body.Close()
	etag := resp.Header.Get("ETag")

	// Stop it (the collectors' leases are left to expire) and put a new
	// API in its place, not yet running: the collectors must keep what
	// they have.
	cancel()
	require.NoError(t, <-done)
	second, _ := e.newAPI(t, Config{})
	current.Store("h", second.Handler())
	pollAll(t, cs...)
	ok, why = coverage(want, cs...)
	require.True(t, ok, "while the new API is not ready: %s", why)
	for _, c := range cs {
		require.Len(t, c.jobs, len(jobNames), "collector %s lost jobs", c.id)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- second.Run(ctx2) }()
	t.Cleanup(func() {
		cancel2()
		require.NoError(t, <-done2)
	})
	require.Eventually(t, second.Ready, waitFor, 10*time.Millisecond)
	after, _, err := fetchScrapeConfigs(http.DefaultClient, front.URL)
	require.NoError(t, err)
	require.Equal(t, len(before), len(after))
	resp, err = http.Get(front.URL + "/scrape_configs")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, etag, resp.Header.Get("ETag"), "the same catalog must give the same answer")

	// The old leases expire (TTL 2s) and the new API claims again for the
	// collectors, which poll every 250 ms meanwhile. Count polls that saw
	// a target owned twice or not at all.
	gaps := 0
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		pollAll(t, cs...)
		if ok, why := coverage(want, cs...); !ok {
			gaps++
			t.Logf("poll without full coverage: %s", why)
		}
		time.Sleep(250 * time.Millisecond) // the collectors' poll interval, not a wait for a condition
	}
	require.Eventually(t, func() bool {
		pollAll(t, cs...)
		ok, _ := coverage(want, cs...)
		return ok
	}, waitFor, 100*time.Millisecond)
	claims, _, err := leases.ListClaims(t.Context(), e.etcd, e.ks)
	require.NoError(t, err)
	require.Len(t, claims, len(want))
	require.Zero(t, gaps, "a poll across the restart was told to drop or double targets")
}
