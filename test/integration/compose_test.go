//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// composeBind is the loopback address the compose project publishes its
// status ports on: one of its own, so that they cannot clash with anything
// listening on 127.0.0.1 (all of 127/8 is loopback on Linux).
const composeBind = "127.0.0.77"

// TestCompose runs docker-compose.yaml unchanged, as the README tells a
// user to, and checks what it promises: within a minute of `up`, every demo
// target is scraped and its data has reached the sink, and the status page
// shows each target with its scraper.
func TestCompose(t *testing.T) {
	compose := composeCommand(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	project := fmt.Sprintf("allotit%d", os.Getpid())
	run := func(ctx context.Context, args ...string) ([]byte, error) {
		full := append(append(compose[1:], "-p", project, "-f", filepath.Join(root, "docker-compose.yaml")), args...)
		cmd := exec.CommandContext(ctx, compose[0], full...)
		cmd.Env = append(os.Environ(), "ALLOT_BIND="+composeBind)
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			if out, err := run(ctx, "logs", "--no-color", "--tail=30"); err == nil {
				t.Logf("compose logs:\n%s", out)
			}
		}
		if out, err := run(ctx, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})

	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if out, err := run(ctx, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	t.Logf("compose up -d returned after %s", time.Since(start).Round(time.Millisecond))

	sink := "http://" + composeBind + ":8090"
	status := "http://" + composeBind + ":8080" // discoverer1
	const demoTargets = 30

	// Data at the sink: an `up` sample of every demo target.
	waitForWhy(t, 2*time.Minute, "every demo target's data at the sink", func() (bool, string) {
		var raw map[string][][3]any
		if err := tryJSON(sink+"/api/v1/samples?match="+url.QueryEscape("up{"), &raw); err != nil {
			return false, err.Error()
		}
		seen := map[string]bool{}
		for k, rows := range raw {
			if !strings.Contains(k, `service.name="demo"`) || len(rows) == 0 {
				continue
			}
			_, rest, _ := strings.Cut(k, `service.instance.id="`)
			inst, _, _ := strings.Cut(rest, `"`)
			seen[inst] = true
		}
		return len(seen) == demoTargets, fmt.Sprintf("%d of %d demo targets at the sink", len(seen), demoTargets)
	})
	arrived := time.Since(start)
	t.Logf("every demo target's data at the sink %s after compose up", arrived.Round(time.Millisecond))
	if arrived > time.Minute {
		t.Errorf("data arrived %s after compose up, want within a minute", arrived.Round(time.Second))
	}

	// The status page: every demo target scraped, each by one of the
	// scrapers, in JSON and on the HTML page.
	waitForWhy(t, time.Minute, "every demo target healthy on the status page", func() (bool, string) {
		var body struct {
			Data struct {
				ActiveTargets []struct {
					Pool    string `json:"scrapePool"`
					Health  string `json:"health"`
					Scraper string `json:"scraper"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := tryJSON(status+"/api/v1/targets?state=active", &body); err != nil {
			return false, err.Error()
		}
		up, by := 0, map[string]int{}
		for _, a := range body.Data.ActiveTargets {
			if a.Pool == "demo" && a.Health == "up" && strings.HasPrefix(a.Scraper, "scraper") {
				up++
				by[a.Scraper]++
			}
		}
		return up == demoTargets, fmt.Sprintf("%d of %d demo targets up with a scraper (%v)", up, demoTargets, by)
	})
	resp, err := httpClient.Get(status + "/targets")
	if err != nil {
		t.Fatalf("status page: %v", err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status page: %s: %v", resp.Status, err)
	}
	for _, s := range []string{"scraper1", "scraper2", "scraper3", "demo"} {
		if !strings.Contains(string(page), s) {
			t.Errorf("status page /targets does not mention %q", s)
		}
	}
}

// composeCommand is `docker compose` where the plugin is installed, else
// `docker-compose`, as Taskfile.yml chooses.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	t.Skip("neither `docker compose` nor docker-compose is installed")
	return nil
}
