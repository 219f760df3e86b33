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

// Owners says who owns a target by ID, as the etcd claims do; ok is false
// for a target nobody has claimed.
type Owners func(id string) (owner string, ok bool)

// FillOwners names the owner of every active target no scraper reported on
// (Scraper empty) from owners. Such targets are owned by members that do
// not report scrape state, such as OTel Collectors polling the Target
// Allocator API, or by a scraper that did not answer: their health stays
// "unknown", but the page says who has them.
func FillOwners(t Targets, owners Owners) Targets {
	for i := range t.ActiveTargets {
		a := &t.ActiveTargets[i]
		if a.Scraper != "" {
			continue
		}
		if o, ok := owners(a.ID); ok {
			a.Scraper = o
			if a.Health == "" {
				a.Health = "unknown"
			}
		}
	}
	return t
}

// UnreachableError is a peer whose targets could not be fetched. A view
// missing only such peers is incomplete, not failed: see TargetsAPI.
type UnreachableError struct {
	Addr string
	Err  error
}

func (e *UnreachableError) Error() string { return fmt.Sprintf("targets from %s: %v", e.Addr, e.Err) }

func (e *UnreachableError) Unwrap() error { return e.Err }

// Remote fetches /api/v1/targets from other allot processes.
type Remote struct {
	Client *http.Client
}

// Fetch asks every address (host:port) concurrently. It returns what it got
// and an error naming each address that failed (errors.Join of
// *UnreachableError), so one dead scraper doesn't blank the whole view.
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
				errs = append(errs, &UnreachableError{Addr: addr, Err: err})
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
