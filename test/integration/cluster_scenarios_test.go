//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	tc "github.com/testcontainers/testcontainers-go"
)

// owners asks the discoverer which scraper owns each demo target.
func (c *cluster) owners() map[string]string {
	c.t.Helper()
	resp, err := http.Get(c.discURL + "/api/v1/targets?state=active")
	if err != nil {
		c.t.Fatalf("targets API: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				Labels  map[string]string `json:"labels"`
				Scraper string            `json:"scraper"`
				Pool    string            `json:"scrapePool"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Fatalf("targets API: %v", err)
	}
	out := map[string]string{}
	for _, a := range body.Data.ActiveTargets {
		if a.Pool == "demo" {
			out[a.Labels["instance"]] = a.Scraper
		}
	}
	return out
}

// ownedBy returns the up-series keys of targets owned by scraper.
func ownedBy(owners map[string]string, scraper string) []string {
	var out []string
	for inst, s := range owners {
		if s == scraper {
			out = append(out, inst)
		}
	}
	return out
}

func only(series map[string][]int64, instances []string) map[string][]int64 {
	out := map[string][]int64{}
	for k, v := range series {
		for _, inst := range instances {
			if strings.Contains(k, fmt.Sprintf("service.instance.id=%q", inst)) {
				out[k] = v
			}
		}
	}
	return out
}

func TestCluster(t *testing.T) {
	c := newCluster(t, 3)
	start := time.Now()
	c.waitScraping(start.Add(interval), 3*time.Minute)
	waitFor(t, time.Minute, "every demo target owned", func() bool {
		o := c.owners()
		if len(o) < targets {
			return false
		}
		for _, s := range o {
			if s == "" {
				return false
			}
		}
		return true
	})

	t.Run("kill -9 a scraper", func(t *testing.T) {
		victim := "scraper-2"
		lost := ownedBy(c.owners(), victim)
		t.Logf("%s owns %d targets", victim, len(lost))
		killed := time.Now()
		docker(t, "kill", "--signal", "KILL", c.scrapers[victim].GetContainerID())
		// Scraped again within lease TTL + 1 s, plus one interval for the
		// next scheduled scrape to land at the sink.
		c.waitScraping(killed.Add(leaseTTL+time.Second), leaseTTL+time.Second+2*interval+10*time.Second)
		waitFor(t, 30*time.Second, "window after failover", func() bool { return time.Since(killed) > 3*interval })
		analyse(only(c.upSeries(), lost), killed.Add(-2*interval), time.Now()).check(t, "kill -9", 1, 0)
		if err := c.scrapers[victim].Start(t.Context()); err != nil {
			t.Fatalf("restart %s: %v", victim, err)
		}
		waitFor(t, time.Minute, victim+" rejoined with targets", func() bool { return len(ownedBy(c.owners(), victim)) > 0 })
	})

	t.Run("rolling restart", func(t *testing.T) {
		from := time.Now()
		for _, id := range []string{"scraper-1", "scraper-2", "scraper-3"} {
			timeout := 10 * time.Second
			if err := c.scrapers[id].Stop(t.Context(), &timeout); err != nil {
				t.Fatalf("stop %s: %v", id, err)
			}
			if err := c.scrapers[id].Start(t.Context()); err != nil {
				t.Fatalf("start %s: %v", id, err)
			}
			waitFor(t, time.Minute, id+" healthy", func() bool {
				resp, err := http.Get(c.endpoint(c.scrapers[id], "8080/tcp") + "/-/healthy")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == 200
			})
		}
		c.waitScraping(time.Now(), 2*time.Minute)
		analyse(c.upSeries(), from, time.Now()).check(t, "rolling restart", 1, 1)
	})

	t.Run("etcd member loss and leader kill", func(t *testing.T) {
		from := time.Now()
		timeout := 5 * time.Second
		if err := c.etcd[2].Stop(t.Context(), &timeout); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "two intervals on two members", func() bool { return time.Since(from) > 2*interval })
		if err := c.etcd[2].Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "member back", func() bool { return time.Since(from) > 4*interval })
		leader := c.etcdLeader(t)
		t.Logf("killing etcd leader etcd%d", leader+1)
		docker(t, "kill", "--signal", "KILL", c.etcd[leader].GetContainerID())
		waitFor(t, 2*time.Minute, "scraping after leader loss", func() bool { return time.Since(from) > 8*interval })
		c.waitScraping(time.Now().Add(-interval), time.Minute)
		analyse(c.upSeries(), from, time.Now()).check(t, "etcd member and leader loss", 1, 0)
		if err := c.etcd[leader].Start(t.Context()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("NATS outage", func(t *testing.T) {
		from := time.Now()
		timeout := 5 * time.Second
		if err := c.nats.Stop(t.Context(), &timeout); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		// A target added while NATS is down: the discoverer's own metrics.
		if err := c.discoverer.CopyToContainer(t.Context(), []byte(`[{"targets":["discoverer:8080"],"labels":{"added":"during-outage"}}]`), "/etc/allot/extra.json", 0o666); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "30 s of NATS outage", func() bool { return time.Since(down) > 30*time.Second })
		analyse(c.upSeries(), from, time.Now()).check(t, "owned targets during NATS outage", 0, 0)
		if err := c.nats.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		waitFor(t, time.Minute, "the target added during the outage scraped", func() bool {
			for k, ts := range c.samples("up{") {
				if strings.Contains(k, `service.name="extra"`) && len(ts) > 0 {
					return true
				}
			}
			return false
		})
		t.Logf("target added during the outage scraped %s after NATS returned", time.Since(back).Truncate(time.Millisecond))
	})

	t.Run("scraper cut off from etcd", func(t *testing.T) {
		victim := "scraper-1"
		cut := ownedBy(c.owners(), victim)
		from := time.Now()
		docker(t, "network", "disconnect", c.control.Name, c.scrapers[victim].GetContainerID())
		waitFor(t, time.Minute, "takeover", func() bool { return time.Since(from) > leaseTTL+3*interval })
		analyse(only(c.upSeries(), cut), from.Add(-interval), time.Now()).check(t, "partitioned scraper", 1, 1)
		docker(t, "network", "connect", "--alias", victim, c.control.Name, c.scrapers[victim].GetContainerID())
	})

	t.Run("scale 3 to 6 and back", func(t *testing.T) {
		from := time.Now()
		before := c.owners()
		var added []*tc.DockerContainer
		for i := 4; i <= 6; i++ {
			added = append(added, c.addScraper(fmt.Sprintf("scraper-%d", i)))
		}
		waitFor(t, 2*time.Minute, "new scrapers get targets", func() bool {
			o := c.owners()
			return len(ownedBy(o, "scraper-4")) > 0 && len(ownedBy(o, "scraper-5")) > 0 && len(ownedBy(o, "scraper-6")) > 0
		})
		after := c.owners()
		moved := 0
		for inst, s := range after {
			if before[inst] != s {
				moved++
			}
		}
		// Ideal: half the targets move to the three new scrapers; allow 10% more.
		if limit := targets*55/100 + 1; moved > limit {
			t.Errorf("scale-out moved %d of %d targets, want at most %d", moved, targets, limit)
		}
		for _, a := range added {
			timeout := 10 * time.Second
			if err := a.Stop(t.Context(), &timeout); err != nil {
				t.Fatal(err)
			}
		}
		c.waitScraping(time.Now(), time.Minute)
		analyse(c.upSeries(), from, time.Now()).check(t, "scale 3→6→3", 1, 1)
	})
}

// etcdLeader returns the index of the etcd leader, asked through etcdctl
// inside a member.
func (c *cluster) etcdLeader(t *testing.T) int {
	t.Helper()
	for i, m := range c.etcd {
		code, out, err := m.Exec(t.Context(), []string{"/usr/local/bin/etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "status", "-w", "json"})
		if err != nil || code != 0 {
			continue
		}
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := out.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		s := b.String()
		if j := strings.Index(s, "["); j >= 0 {
			s = s[j:]
		}
		var st []struct {
			Status struct {
				Header struct {
					MemberID uint64 `json:"member_id"`
				} `json:"header"`
				Leader uint64 `json:"leader"`
			} `json:"Status"`
		}
		if json.Unmarshal([]byte(s), &st) == nil && len(st) == 1 && st[0].Status.Leader == st[0].Status.Header.MemberID {
			return i
		}
	}
	t.Fatal("no etcd leader found")
	return -1
}
