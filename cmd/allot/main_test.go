package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allot-dev/allot/pkg/embedded"
)

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(badCfg, []byte("scrape_configs:\n- job_name: a\n  scrape_intervl: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The NATS case needs an etcd that answers: connect reaches etcd first.
	etcd, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(dir, "etcd")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	deadNATS := "nats://" + closedPort(t)
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"unknown flag", []string{"scraper", "--no.such-flag"}, 2, []string{"no.such-flag"}},
		{"bad log level", []string{"sink", "--log.level=loud"}, 1, []string{"--log.level"}},
		{"unreadable config", []string{"discoverer", "--config.file", filepath.Join(dir, "missing.yml")}, 1, []string{"missing.yml"}},
		{"invalid config names file, line and field", []string{"discoverer", "--config.file", badCfg}, 1, []string{badCfg, "line 3", "scrape_intervl"}},
		{"discoverer without config", []string{"discoverer"}, 1, []string{"--config.file is required"}},
		{"etcd unreachable", []string{"rebalancer", "--etcd.endpoints=http://127.0.0.1:1", "--startup.timeout=1s", "--web.listen-address=127.0.0.1:0"}, 1, []string{"etcd at http://127.0.0.1:1 unreachable after 1s"}},
		{"nats unreachable", []string{"scraper", "--etcd.endpoints=" + etcd.Endpoint(), "--nats.url=" + deadNATS, "--otlp.endpoint=http://127.0.0.1:1", "--startup.timeout=1s", "--web.listen-address=127.0.0.1:0", "--data.dir=" + dir}, 1, []string{"nats at " + deadNATS + " unreachable after 1s (--startup.timeout)"}},
		{"tls cert without key", []string{"discoverer", "--web.tls-cert-file=" + badCfg}, 1, []string{"--web.tls-cert-file is set but --web.tls-key-file is not"}},
		{"tls pair unreadable", []string{"discoverer", "--web.tls-cert-file=" + filepath.Join(dir, "no-cert.pem"), "--web.tls-key-file=" + filepath.Join(dir, "no-key.pem")}, 1, []string{"load --web.tls-cert-file=", "no-cert.pem"}},
		{"tls pair not PEM", []string{"discoverer", "--web.tls-cert-file=" + badCfg, "--web.tls-key-file=" + badCfg}, 1, []string{"load --web.tls-cert-file=", "bad.yml"}},
		{"drain without scraper", []string{"drain"}, 1, []string{"usage: allot drain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d (stderr: %s)", code, tc.wantCode, stderr.String())
			}
			for _, frag := range tc.wantErr {
				if !strings.Contains(stderr.String(), frag) {
					t.Errorf("stderr %q does not mention %q", stderr.String(), frag)
				}
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	var out bytes.Buffer
	if code := run(t.Context(), []string{"help"}, &out, &out); code != 0 || !strings.Contains(out.String(), "scraper") {
		t.Fatalf("help: code %d, %q", code, out.String())
	}
}

// closedPort is a loopback address nothing listens on: it was free a moment
// ago and is closed again, so connecting to it is refused at once.
func closedPort(t *testing.T) string {
	t.Helper()
	return freeAddr(t)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestAllModeScrapesDemoTargets runs what the README tells a newcomer to
// run and checks that every demo target is owned by one scraper, up, and
// that samples reach the built-in sink.
func TestAllModeScrapesDemoTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole cluster")
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"all", "--web.listen-address", addr, "--data.dir", t.TempDir(),
			"--demo.targets=6", "--scrapers=2", "--log.level=warn"}, &bytes.Buffer{}, &stderr)
	}()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("demo targets not all scraped within 60s; last answer: %s\nstderr: %s", last, stderr.String())
		}
		ok, why := allScraped(addr, 6)
		if ok {
			break
		}
		last = why
		select {
		case code := <-done:
			t.Fatalf("allot exited early with %d: %s", code, stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	checkVerbsAgainst(t, "http://"+addr, 6, []string{"scraper-0", "scraper-1"})
	resp, err := http.Get("http://" + addr + "/sink/api/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats struct{ Points int }
	_ = json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if stats.Points == 0 {
		t.Error("no samples reached the sink")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d after cancel: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("allot all did not stop within 30s of cancel")
	}
}

func allScraped(addr string, want int) (bool, string) {
	resp, err := http.Get("http://" + addr + "/api/v1/targets")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				Health  string `json:"health"`
				Scraper string `json:"scraper"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return false, err.Error()
	}
	up := 0
	for _, a := range body.Data.ActiveTargets {
		if a.Health == "up" && a.Scraper != "" {
			up++
		}
	}
	return up == want && len(body.Data.ActiveTargets) == want, fmt.Sprintf("%d of %d up and owned", up, len(body.Data.ActiveTargets))
}

// checkVerbsAgainst runs `allot targets` and `allot status` against a
// running allot whose targets are all up and owned: every target is a row,
// up and owned by one of scrapers, and every scraper is a member row.
func checkVerbsAgainst(t *testing.T, url string, targets int, scrapers []string) {
	t.Helper()
	stdout, stderr, err := runVerb(t, targetsVerb, "--url="+url, "--state=up")
	if err != nil {
		t.Fatalf("allot targets: %v (%s)", err, stderr)
	}
	_, rows := table(t, stdout)
	if len(rows) != targets {
		t.Errorf("allot targets --state=up: %d rows, want %d:\n%s", len(rows), targets, stdout)
	}
	for _, r := range rows {
		if len(r) < 4 || r[2] != "up" || !slices.Contains(scrapers, r[3]) {
			t.Errorf("allot targets: row %q: want up and owned by one of %v", r, scrapers)
		}
	}
	stdout, stderr, err = runVerb(t, statusVerb, "--url="+url)
	if err != nil {
		t.Fatalf("allot status: %v (%s)", err, stderr)
	}
	sections := strings.Split(stdout, "\n\n")
	if len(sections) < 2 {
		t.Fatalf("allot status: no members table:\n%s", stdout)
	}
	_, members := table(t, sections[1])
	var ids []string
	for _, m := range members {
		ids = append(ids, m[0])
		if m[1] != "scraper" {
			t.Errorf("allot status: member %q: kind %q, want scraper", m[0], m[1])
		}
	}
	if !slices.Equal(ids, scrapers) {
		t.Errorf("allot status: members %v, want %v:\n%s", ids, scrapers, stdout)
	}
}
