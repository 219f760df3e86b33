package web

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
)

// Merge combines what the discoverer publishes (every target, owner
// unknown) with what scrapers report (the targets they own). A published
// target no scraper reports stays in the answer with health "unknown", so the
// view shows unowned targets instead of hiding them. Dropped targets come
// from the catalog.
func Merge(catalog Targets, owned ...Targets) Targets {
	byID := make(map[string]ActiveTarget)
	for _, o := range owned {
		for _, a := range o.ActiveTargets {
			if prev, ok := byID[a.ID]; ok && prev.LastScrape.After(a.LastScrape) {
				continue
			}
			byID[a.ID] = a
		}
	}
	out := Targets{DroppedTargets: catalog.DroppedTargets, DroppedTargetCounts: catalog.DroppedTargetCounts}
	seen := make(map[string]bool, len(byID))
	for _, c := range catalog.ActiveTargets {
		if a, ok := byID[c.ID]; ok {
			// A scraper's report may leave out what the catalog knows.
			if len(a.DiscoveredLabels) == 0 {
				a.DiscoveredLabels = c.DiscoveredLabels
			}
			if len(a.Labels) == 0 {
				a.Labels = c.Labels
			}
			a.ScrapeInterval = cmp.Or(a.ScrapeInterval, c.ScrapeInterval)
			a.ScrapeTimeout = cmp.Or(a.ScrapeTimeout, c.ScrapeTimeout)
			a.GlobalURL = cmp.Or(a.GlobalURL, c.GlobalURL)
			if a.ScrapeInterval == "" {
				a.ScrapeInterval, a.ScrapeTimeout = c.ScrapeInterval, c.ScrapeTimeout
			}
			out.ActiveTargets = append(out.ActiveTargets, a)
			seen[c.ID] = true
			continue
		}
		if c.Health == "" {
			c.Health = "unknown"
		}
		out.ActiveTargets = append(out.ActiveTargets, c)
	}
	// Targets a scraper still scrapes but the catalog no longer lists (a
	// removal on its way) are shown too; hiding them would hide a leak.
	for id, a := range byID {
		if !seen[id] {
			out.ActiveTargets = append(out.ActiveTargets, a)
		}
	}
	out.Sort()
	return out
}

// Remote fetches /api/v1/targets from other allot processes.
type Remote struct {
	Client *http.Client
}

// Fetch asks every address (host:port) concurrently. It returns what it got
// and an error naming each address that failed, so one dead scraper doesn't
// blank the whole view.
func (r Remote) Fetch(ctx context.Context, addrs []string) ([]Targets, error) {
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		out  []Targets
		errs []error
	)
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t, err := fetchOne(ctx, client, addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("targets from %s: %w", addr, err))
				return
			}
			out = append(out, t)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func fetchOne(ctx context.Context, client *http.Client, addr string) (Targets, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/targets?state=active&scope=local", nil)
	if err != nil {
		return Targets{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Targets{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Targets{}, fmt.Errorf("status %s", resp.Status)
	}
	var body struct {
		Status string  `json:"status"`
		Data   Targets `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return Targets{}, fmt.Errorf("decode: %w", err)
	}
	return body.Data, nil
}
