package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"

	"github.com/allot-dev/allot/pkg/configfile"
	"github.com/allot-dev/allot/pkg/embedded"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/web"
	"github.com/allot-dev/allot/services/discoverer"
	"github.com/allot-dev/allot/services/rebalancer"
)

// reloadFixture is a discoverer as `allot discoverer` wires it (startDiscoverer,
// the pages), on embedded etcd and NATS.
type reloadFixture struct {
	path string
	srv  *server
	d    *discoverer.Discoverer
	pub  *events.Publisher
	logs *lockedBuffer
}

// reloadConfig is a valid config: job a with the targets given and a
// password that /config must never show, plus the jobs named in extra.
func reloadConfig(password string, targets []string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: 15s\nscrape_configs:\n- job_name: a\n  basic_auth:\n    username: allot\n    password: %s\n  static_configs:\n  - targets: [%s]\n",
		password, strings.Join(targets, ", "))
	for _, j := range extra {
		fmt.Fprintf(&b, "- job_name: %s\n  static_configs:\n  - targets: [%s:80]\n", j, j)
	}
	b.WriteString("allot:\n  target_allocator:\n    enabled: false\n")
	return b.String()
}

func startReloadFixture(t *testing.T, initial string) *reloadFixture {
	t.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	n, err := embedded.StartNATS(embedded.NATSConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)

	f := &reloadFixture{path: filepath.Join(t.TempDir(), "allot.yml"), logs: &lockedBuffer{}}
	logger := slog.New(slog.NewTextHandler(f.logs, nil))
	writeFile(t, f.path, initial)
	file, err := loadConfig(f.path, logger)
	if err != nil {
		t.Fatal(err)
	}
	// Defaults from the flags, as the binary has them.
	var (
		dCfg  discoverer.Config
		evCfg events.Config
	)
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	dCfg.RegisterFlags(fs)
	evCfg.RegisterFlags(fs)
	co := clusterOptions{etcdEndpoints: e.Endpoint(), etcdPrefix: "/test/", natsURL: n.URL(), startupTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := connect(ctx, &co, "test", logger)
	if err != nil {
		t.Fatal(err)
	}
	if f.srv, err = newServer("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	g := newGroup(ctx)
	ks := co.keyspace()
	dCfg.ID, dCfg.Keyspace, dCfg.Events = "d-0", ks, evCfg
	if f.d, err = startDiscoverer(g, f.srv, dCfg, &crOptions{}, f.path, conn.etcd, conn.js, file, logger); err != nil {
		t.Fatal(err)
	}
	mountPages(g, f.srv, remoteScrapers(f.d, conn.etcd, ks), f.d, file, nil, conn.etcd, ks)
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
		conn.Close()
	})
	if f.pub, err = events.NewPublisher(ctx, conn.js, evCfg, nil, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// published reports whether the buckets hold exactly the catalog, and the
// catalog's addresses by job.
func (f *reloadFixture) published(ctx context.Context) (bool, map[string][]string) {
	active, _ := f.d.Targets()
	byJob := map[string][]string{}
	snap, err := f.pub.Snapshot(ctx)
	if err != nil || len(snap.Targets) != len(active) {
		return false, byJob
	}
	ok := true
	for _, a := range active {
		byJob[a.Job] = append(byJob[a.Job], a.Labels["__address__"])
		if _, in := snap.Targets[a.ID]; !in {
			ok = false
		}
	}
	for _, addrs := range byJob {
		slices.Sort(addrs)
	}
	return ok, byJob
}

func (f *reloadFixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	f.srv.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestReload changes the config file and reloads it through each trigger
// the discoverer has: a valid change is published and shown at /config
// (secrets redacted); an invalid one is refused with its file, line and
// field, and the last good config keeps running and is still shown.
func TestReload(t *testing.T) {
	// SIGHUP is sent to this process: catch it here as well, so that it
	// can never kill the test binary before the reloader listens.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(hup) })

	for _, tc := range []struct {
		name string
		// reload triggers a reload and returns its error, if the trigger
		// reports one; it is called again until the change shows.
		reload func(t *testing.T, f *reloadFixture) error
	}{
		{"POST /-/reload", func(t *testing.T, f *reloadFixture) error {
			rec := httptest.NewRecorder()
			f.srv.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/-/reload", nil))
			if rec.Code != http.StatusOK {
				return fmt.Errorf("status %d: %s", rec.Code, rec.Body.String())
			}
			return nil
		}},
		{"SIGHUP", func(t *testing.T, f *reloadFixture) error {
			if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startReloadFixture(t, reloadConfig("hunter2-v1", []string{"a1:80"}))
			ctx := t.Context()
			waitPublished := func(want map[string][]string) {
				t.Helper()
				var got map[string][]string
				if !waitUntil(20*time.Second, func() bool {
					var ok bool
					ok, got = f.published(ctx)
					return ok && fmt.Sprint(got) == fmt.Sprint(want)
				}) {
					t.Fatalf("published %v, want %v\nlogs:\n%s", got, want, f.logs.String())
				}
			}
			waitPublished(map[string][]string{"a": {"a1:80"}})
			requireConfigPage(t, f, []string{"a1:80", "<secret>", "target_allocator"}, []string{"hunter2", "job_name: b"})

			// A valid change: new targets and a new job are published.
			writeFile(t, f.path, reloadConfig("hunter2-v2", []string{"a1:80", "a2:80"}, "b"))
			var lastErr error
			if !waitUntil(20*time.Second, func() bool {
				if lastErr = tc.reload(t, f); lastErr != nil {
					return false
				}
				ok, got := f.published(ctx)
				return ok && len(got["b"]) == 1 && len(got["a"]) == 2
			}) {
				t.Fatalf("reload not applied: %v\nlogs:\n%s", lastErr, f.logs.String())
			}
			waitPublished(map[string][]string{"a": {"a1:80", "a2:80"}, "b": {"b:80"}})
			requireConfigPage(t, f, []string{"a2:80", "job_name: b", "<secret>"}, []string{"hunter2"})

			// An invalid change (a misspelt field) is refused.
			bad := strings.Replace(reloadConfig("hunter2-v3", []string{"a3:80"}, "c"), "  basic_auth:", "  scrape_intervl: 5s\n  basic_auth:", 1)
			writeFile(t, f.path, bad)
			line := slices.IndexFunc(strings.Split(bad, "\n"), func(l string) bool { return strings.Contains(l, "scrape_intervl") }) + 1
			wantErr := []string{f.path, fmt.Sprintf("line %d", line), "scrape_intervl"}
			if tc.name == "SIGHUP" {
				if !waitUntil(20*time.Second, func() bool {
					_ = tc.reload(t, f)
					return strings.Contains(f.logs.String(), "config reload rejected")
				}) {
					t.Fatalf("SIGHUP: no reload attempt logged:\n%s", f.logs.String())
				}
				logged := f.logs.String()[strings.Index(f.logs.String(), "config reload rejected"):]
				logged, _, _ = strings.Cut(logged, "\n")
				for _, s := range wantErr {
					if !strings.Contains(logged, s) {
						t.Errorf("logged rejection %q does not name %q", logged, s)
					}
				}
			} else {
				err := tc.reload(t, f)
				if err == nil || !strings.Contains(err.Error(), "status 400") {
					t.Fatalf("invalid config: %v, want status 400", err)
				}
				for _, s := range wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("rejection %q does not name %q", err, s)
					}
				}
			}
			// The last good config keeps running and is what /config shows.
			waitPublished(map[string][]string{"a": {"a1:80", "a2:80"}, "b": {"b:80"}})
			requireConfigPage(t, f, []string{"a2:80", "job_name: b"}, []string{"a3:80", "job_name: c", "hunter2"})
		})
	}
}

func requireConfigPage(t *testing.T, f *reloadFixture, has, hasNot []string) {
	t.Helper()
	code, body := f.get(t, "/config?format=yaml")
	if code != http.StatusOK {
		t.Fatalf("/config: %d: %s", code, body)
	}
	for _, s := range has {
		if !strings.Contains(body, s) {
			t.Errorf("/config lacks %q:\n%s", s, body)
		}
	}
	for _, s := range hasNot {
		if strings.Contains(body, s) {
			t.Errorf("/config shows %q:\n%s", s, body)
		}
	}
}

// TestConfigPageShowsGeneratedJobs: jobs generated from Prometheus
// Operator resources run next to the file's, and /config shows them.
func TestConfigPageShowsGeneratedJobs(t *testing.T) {
	f := startReloadFixture(t, reloadConfig("hunter2", []string{"a1:80"}))
	gen, err := config.Load("scrape_configs:\n- job_name: serviceMonitor/default/web/0\n  static_configs:\n  - targets: [web:8080]\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	file, err := configfile.Load(f.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := &scrapeConfigs{d: f.d}
	if err := sc.setFile(file.Prometheus); err != nil {
		t.Fatal(err)
	}
	sc.setCR(gen.ScrapeConfigs, slog.New(slog.DiscardHandler))
	requireConfigPage(t, f, []string{"job_name: a", "job_name: serviceMonitor/default/web/0", "web:8080", "<secret>"}, []string{"hunter2"})
}

// TestConfigPageWithoutDiscoverer: a process that runs no discoverer (allot
// rebalancer) says what it runs instead of failing.
func TestConfigPageWithoutDiscoverer(t *testing.T) {
	h := web.ConfigPage(effectiveConfig(nil, nil, new(rebalancer.Rebalancer)))
	for _, q := range []string{"", "?format=json", "?format=yaml"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/config"+q, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "runs the rebalancer only") {
			t.Errorf("/config%s: %d: %s", q, rec.Code, rec.Body.String())
		}
	}
}
