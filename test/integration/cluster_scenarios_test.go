//go:build integration

package integration

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// exportLag is how long after a scrape its samples may still be on their
// way to the sink; windows end this long before they are analysed.
const exportLag = 1500 * time.Millisecond

// TestCluster runs one cluster through every scenario in turn. Each starts
// from a settled cluster of scraper-1..3 and leaves one behind.
func TestCluster(t *testing.T) {
	began := time.Now()
	c := newCluster(t, 3)
	three := []string{"scraper-1", "scraper-2", "scraper-3"}
	c.waitScraping(t, time.Now(), 3*time.Minute)
	c.settle(t, 2*time.Minute, three...)
	t.Logf("cluster up and settled in %s", time.Since(began).Round(time.Second))

	run := func(name string, f func(t *testing.T)) {
		start := time.Now()
		t.Run(name, f)
		t.Logf("%s took %s", name, time.Since(start).Round(time.Second))
	}

	run("kill -9 a scraper", func(t *testing.T) {
		victim := "scraper-2"
		lost := c.claims.ownedBy(victim)
		if len(lost) == 0 {
			t.Fatalf("%s owns nothing", victim)
		}
		t.Logf("%s owns %d targets", victim, len(lost))
		killed := time.Now()
		docker(t, "kill", "--signal", "KILL", c.scraper(victim).GetContainerID())
		t.Cleanup(func() {
			if st, err := c.scraper(victim).State(t.Context()); err == nil && !st.Running {
				_ = c.scraper(victim).Start(t.Context())
			}
		})

		// Its claims go when its lease expires on the server (at most a TTL
		// after its last renewal) and the next scraper in line claims at once.
		c.waitTakenOver(t, victim, lost, leaseTTL+15*time.Second)
		var slowest time.Duration
		for _, id := range lost {
			took := c.claimedAwayAfter(id, victim, killed).Sub(killed)
			slowest = max(slowest, took)
			if took > leaseTTL+time.Second {
				t.Errorf("%s (%s) claimed again %s after the kill, want at most lease TTL + 1s = %s", id, c.instance(id), took.Round(time.Millisecond), leaseTTL+time.Second)
			}
		}
		t.Logf("all %d targets claimed again at most %s after the kill", len(lost), slowest.Round(time.Millisecond))

		// The new owner scrapes each target at its next scheduled time.
		pause(t, time.Until(killed.Add(slowest+3*interval)))
		up := c.up(t, "demo", "extra")
		insts := c.instancesOf(lost)
		for i, id := range lost {
			claimed := c.claimedAwayAfter(id, victim, killed)
			var first time.Time
			for _, ms := range up[insts[i]] {
				if ms > killed.UnixMilli() {
					first = time.UnixMilli(ms)
					break
				}
			}
			if first.IsZero() || first.Sub(claimed) > interval+time.Second {
				t.Errorf("%s first scraped at %s after the kill, claimed at %s: want within one interval of the claim", insts[i], rel(first.Sub(killed)), rel(claimed.Sub(killed)))
			}
		}
		to := time.Now().Add(-exportLag)
		analyse(only(up, insts), killed, killed.Add(-interval), to).check(t, "kill -9: targets of "+victim, limits{missing: 1})
		analyse(except(up, insts), killed, killed.Add(-interval), to).check(t, "kill -9: other targets", limits{})
		if err := c.scraper(victim).Start(t.Context()); err != nil {
			t.Fatalf("restart %s: %v", victim, err)
		}
		c.settle(t, 2*time.Minute, three...)
	})

	run("rolling restart", func(t *testing.T) {
		from := time.Now()
		for _, id := range three {
			timeout := 10 * time.Second
			stopping := time.Now()
			if err := c.scraper(id).Stop(t.Context(), &timeout); err != nil {
				t.Fatalf("stop %s: %v", id, err)
			}
			t.Logf("%s stopped in %s", id, time.Since(stopping).Round(time.Millisecond))
			if err := c.scraper(id).Start(t.Context()); err != nil {
				t.Fatalf("start %s: %v", id, err)
			}
			c.settle(t, 2*time.Minute, three...)
		}
		to := time.Now().Add(-exportLag)
		c.logHandoffs(t, from, to)
		analyse(c.up(t, "demo", "extra"), from, from.Add(-interval), to).check(t, "rolling restart", limits{missing: 1, extra: 1, total: 1})
	})

	run("etcd member loss and leader kill", func(t *testing.T) {
		from := time.Now()
		leader := c.etcdLeader(t)
		follower := (leader + 1) % len(c.etcd)
		timeout := 5 * time.Second
		t.Logf("stopping etcd%d (a follower; etcd%d leads)", follower+1, leader+1)
		if err := c.etcd[follower].Stop(t.Context(), &timeout); err != nil {
			t.Fatal(err)
		}
		c.etcdc.refresh(t)
		pause(t, 2*interval)
		if err := c.etcd[follower].Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.waitEtcdHealthy(t, time.Minute)
		c.etcdc.refresh(t)
		pause(t, interval)

		leader = c.etcdLeader(t)
		t.Logf("killing the etcd leader etcd%d", leader+1)
		killed := time.Now()
		docker(t, "kill", "--signal", "KILL", c.etcd[leader].GetContainerID())
		c.etcdc.refresh(t)
		pause(t, 3*interval)
		if err := c.etcd[leader].Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.waitEtcdHealthy(t, time.Minute)
		c.etcdc.refresh(t)
		pause(t, interval)
		to := time.Now().Add(-exportLag)

		analyse(c.up(t, "demo", "extra"), killed, from.Add(-interval), to).check(t, "etcd member loss and leader kill", limits{})
		c.checkSessionsKept(t, three, from)
		if h := c.claims.handoffs(from, to); len(h) > 0 || t.Failed() {
			t.Errorf("%d targets changed owner while etcd lost members", len(h))
			c.logClaimEvents(t, from, killed)
		}
		c.etcdc.checkClaims(t)
		c.settle(t, time.Minute, three...)
	})

	run("NATS outage", func(t *testing.T) {
		from := time.Now()
		timeout := 5 * time.Second
		if err := c.nats.Stop(t.Context(), &timeout); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		t.Cleanup(func() {
			if st, err := c.nats.State(t.Context()); err == nil && !st.Running {
				_ = c.nats.Start(t.Context())
			}
		})
		// A target added while NATS is down: the discoverer's own metrics,
		// through file SD.
		if err := c.discoverer.CopyToContainer(t.Context(), []byte(`[{"targets":["discoverer:8080"],"labels":{"added":"during-outage"}}]`), "/etc/allot/extra.json", 0o644); err != nil {
			t.Fatal(err)
		}
		pause(t, time.Until(down.Add(30*time.Second)))
		if err := c.nats.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		to := back.Add(-exportLag)
		analyse(c.up(t, "demo"), down, from.Add(-interval), to).check(t, "owned targets during the NATS outage", limits{})

		// Within seconds: the discoverer publishes on reconnecting, the
		// follower gets it and the preferred scraper claims it; its first
		// scrape is due at most an interval later.
		var added string
		waitFor(t, time.Minute, "the target added during the outage in the catalog", func() bool {
			for id, inst := range c.catalog(t) {
				if inst == "discoverer:8080" {
					added = id
					return true
				}
			}
			return false
		})
		var first time.Time
		waitFor(t, time.Minute, "the target added during the outage scraped", func() bool {
			for _, ts := range c.up(t, "extra") {
				if len(ts) > 0 {
					first = time.UnixMilli(ts[0])
					return true
				}
			}
			return false
		})
		claimed := c.claimedAwayAfter(added, "", back)
		switch {
		case claimed.IsZero():
			t.Errorf("target added during the outage (%s) scraped but never claimed", added)
		case claimed.Sub(back) > 5*time.Second:
			t.Errorf("target added during the outage claimed %s after NATS returned, want at most 5s", claimed.Sub(back).Round(time.Millisecond))
		case first.Sub(claimed) > interval+time.Second:
			t.Errorf("target added during the outage first scraped %s after it was claimed, want at most one interval", first.Sub(claimed).Round(time.Millisecond))
		default:
			t.Logf("target added during the outage claimed %s and first scraped %s after NATS returned",
				claimed.Sub(back).Round(time.Millisecond), first.Sub(back).Round(time.Millisecond))
		}
		c.settle(t, time.Minute, three...)
	})

	run("scraper cut off from etcd", func(t *testing.T) {
		victim := "scraper-1"
		cut := c.claims.ownedBy(victim)
		if len(cut) == 0 {
			t.Fatalf("%s owns nothing", victim)
		}
		id := c.scraper(victim).GetContainerID()
		from := time.Now()
		docker(t, "network", "disconnect", c.control.Name, id)
		reconnected := false
		reconnect := func() {
			if !reconnected {
				reconnected = true
				docker(t, "network", "connect", "--alias", victim, c.control.Name, id)
			}
		}
		t.Cleanup(reconnect)

		c.waitTakenOver(t, victim, cut, leaseTTL+15*time.Second)
		// The server expired the lease when it deleted the claims on it.
		expired := time.Time{}
		for _, ev := range c.claims.since(from) {
			if ev.Owner == "" && contains(cut, ev.Target) {
				expired = ev.At
				break
			}
		}
		lost := firstAfter(logTimes(t, c.scraper(victim), "session lost: "), from)
		switch {
		case expired.IsZero():
			t.Errorf("no claim of %s was deleted: its lease did not expire", victim)
		case lost.IsZero():
			t.Errorf("%s never noticed it lost its session", victim)
		case !lost.Before(expired):
			t.Errorf("%s stopped at %s, after its lease expired on the server at %s", victim, rel(lost.Sub(from)), rel(expired.Sub(from)))
		default:
			t.Logf("%s stopped %s after the cut, %s before its lease expired on the server", victim,
				lost.Sub(from).Round(time.Millisecond), expired.Sub(lost).Round(time.Millisecond))
		}

		pause(t, time.Until(c.claims.lastChange().Add(3*interval)))
		up := c.up(t, "demo", "extra")
		insts := c.instancesOf(cut)
		to := time.Now().Add(-exportLag)
		analyse(only(up, insts), from, from.Add(-interval), to).check(t, "targets of the cut-off scraper", limits{missing: 1, extra: 1})
		analyse(except(up, insts), from, from.Add(-interval), to).check(t, "other targets", limits{})
		reconnect()
		c.settle(t, 2*time.Minute, three...)
	})

	run("scale 3 to 6 and back", func(t *testing.T) {
		from := time.Now()
		six := append(append([]string(nil), three...), "scraper-4", "scraper-5", "scraper-6")
		n := len(c.catalog(t))
		// Started together, as an autoscaler would.
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for _, id := range six[3:] {
			wg.Go(func() {
				if _, err := c.startScraper(t, id); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		c.settle(t, 2*time.Minute, six...)
		mid := time.Now()
		for _, id := range six {
			if len(c.claims.ownedBy(id)) == 0 {
				t.Errorf("%s owns nothing after scaling out", id)
			}
		}
		// placement's own bound (TestPlanScaling): a plan moves at most 10%
		// more targets than the ideal share a new member takes, N/(m+1). The
		// three register a few hundred ms apart and the rebalancer plans
		// 200 ms after each member change, so it may plan for 4, 5 and 6
		// members in turn: N·(1/4+1/5+1/6) is the ideal then, N·3/6 if it
		// sees all three at once.
		out := c.claims.handoffs(from, mid)
		limit := int(math.Ceil(1.1 * float64(n) * (1.0/4 + 1.0/5 + 1.0/6)))
		if moves := total(out); moves > limit {
			t.Errorf("scaling 3 → 6 moved targets %d times, want at most %d (1.1 × %d × (1/4+1/5+1/6))", moves, limit, n)
		} else {
			t.Logf("scaling 3 → 6 moved %d of %d targets %d times (ideal %d at once, bound %d one by one)", len(out), n, moves, (n+1)/2, limit)
		}

		// Scaling in without a gap: drain first (operations.md), then stop.
		leaving := map[string]int{}
		for _, id := range six[3:] {
			leaving[id] = len(c.claims.ownedBy(id))
			postDrain(t, c.rebURL, id)
		}
		waitForWhy(t, time.Minute, "the leaving scrapers drained", func() (bool, string) {
			for _, id := range six[3:] {
				if n := len(c.claims.ownedBy(id)); n > 0 {
					return false, fmt.Sprintf("%s owns %d", id, n)
				}
			}
			return true, ""
		})
		for _, id := range six[3:] {
			wg.Go(func() {
				timeout := 10 * time.Second
				if err := c.scraper(id).Stop(t.Context(), &timeout); err != nil {
					t.Errorf("stop %s: %v", id, err)
				}
			})
		}
		wg.Wait()
		c.settle(t, 2*time.Minute, three...)
		in := c.claims.handoffs(mid, time.Now())
		had := 0
		for _, k := range leaving {
			had += k
		}
		if moves, limit := total(in), int(math.Ceil(1.1*float64(had))); moves > limit {
			t.Errorf("scaling 6 → 3 moved targets %d times, want at most %d (1.1 × the %d the leaving scrapers owned)", moves, limit, had)
		} else {
			t.Logf("scaling 6 → 3 moved %d targets %d times; the leaving scrapers owned %d (bound %d)", len(in), moves, had, limit)
		}

		to := time.Now().Add(-exportLag)
		w := analyse(c.up(t, "demo", "extra"), from, from.Add(-interval), to)
		// No gap; a handoff may move a target's schedule forward once.
		byInst := map[string]int{}
		for id, k := range c.claims.handoffs(from, to) {
			byInst[c.instance(id)] += k
		}
		for inst, x := range w.extra {
			if x <= byInst[inst] {
				delete(w.extra, inst)
			}
		}
		w.check(t, "scale 3 → 6 → 3", limits{})
		if t.Failed() {
			c.logClaimEvents(t, from, from)
		}
	})
}

// postDrain asks the rebalancer to move every target off scraper.
func postDrain(t *testing.T, rebURL, scraper string) {
	t.Helper()
	resp, err := httpClient.Post(rebURL+"/api/v1/drain?scraper="+url.QueryEscape(scraper), "", nil)
	if err != nil {
		t.Fatalf("drain %s: %v", scraper, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("drain %s: %s: %s", scraper, resp.Status, b)
	}
}

// waitTakenOver waits until no target in ids is owned by gone or unowned.
func (c *cluster) waitTakenOver(t *testing.T, gone string, ids []string, timeout time.Duration) {
	t.Helper()
	waitForWhy(t, timeout, fmt.Sprintf("the %d targets of %s taken over", len(ids), gone), func() (bool, string) {
		owners := c.claims.owners()
		for _, id := range ids {
			if o := owners[id]; o == "" || o == gone {
				return false, fmt.Sprintf("%s (%s) owned by %q", id, c.instance(id), o)
			}
		}
		return true, ""
	})
}

// claimedAwayAfter is when target id was first claimed by a scraper other
// than gone after from (zero if it was not).
func (c *cluster) claimedAwayAfter(id, gone string, from time.Time) time.Time {
	for _, ev := range c.claims.since(from) {
		if ev.Target == id && ev.Owner != "" && ev.Owner != gone {
			return ev.At
		}
	}
	return time.Time{}
}

// instancesOf maps target IDs to instance labels.
func (c *cluster) instancesOf(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, c.instance(id))
	}
	return out
}

// checkSessionsKept fails for every scraper that lost its session since
// from, with its log lines saying so.
func (c *cluster) checkSessionsKept(t *testing.T, ids []string, from time.Time) {
	t.Helper()
	for _, id := range ids {
		for _, at := range logTimes(t, c.scraper(id), "session lost: ") {
			if at.After(from) {
				t.Errorf("%s lost its session at %s", id, at.Format("15:04:05.000"))
			}
		}
	}
}

// logClaimEvents logs the claim changes since from, relative to ref.
func (c *cluster) logClaimEvents(t *testing.T, from, ref time.Time) {
	t.Helper()
	var b strings.Builder
	for _, ev := range c.claims.since(from) {
		o := ev.Owner
		if o == "" {
			o = "(deleted)"
		}
		fmt.Fprintf(&b, "\n  %s %s %s rev %d", rel(ev.At.Sub(ref)), c.instance(ev.Target), o, ev.Rev)
	}
	t.Logf("claim changes since %s:%s", rel(from.Sub(ref)), b.String())
}

// logHandoffs logs how many times targets changed owner in [from, to].
func (c *cluster) logHandoffs(t *testing.T, from, to time.Time) {
	t.Helper()
	h := c.claims.handoffs(from, to)
	hist := map[int]int{}
	for _, n := range h {
		hist[n]++
	}
	var ks []int
	for k := range hist {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	s := ""
	for _, k := range ks {
		s += fmt.Sprintf(" %d×%d", hist[k], k)
	}
	t.Logf("%d handoffs over %d targets (targets×handoffs:%s)", total(h), len(h), s)
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func firstAfter(ts []time.Time, from time.Time) time.Time {
	for _, at := range ts {
		if at.After(from) {
			return at
		}
	}
	return time.Time{}
}
