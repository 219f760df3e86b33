package main

import (
	"context"
	"net/url"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/web"
	"github.com/allot-dev/allot/services/discoverer"
	"github.com/allot-dev/allot/services/scraper"
)

// scrapeURL renders the URL a target is scraped at from its final labels,
// as Prometheus's Target.URL does.
func scrapeURL(l map[string]string) string {
	u := url.URL{Scheme: l["__scheme__"], Host: l["__address__"], Path: l["__metrics_path__"]}
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	q := url.Values{}
	for k, v := range l {
		if name, ok := strings.CutPrefix(k, "__param_"); ok {
			q.Set(name, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// publicLabels drops the reserved __ labels, as a target's label set shows.
func publicLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		if !strings.HasPrefix(k, "__") {
			out[k] = v
		}
	}
	return out
}

// catalogTargets is the discoverer's view: every published target (owner
// unknown) and every dropped one.
func catalogTargets(d *discoverer.Discoverer) web.Targets {
	active, dropped := d.Targets()
	t := web.Targets{DroppedTargetCounts: map[string]int{}}
	for _, a := range active {
		t.ActiveTargets = append(t.ActiveTargets, web.ActiveTarget{
			ID:               a.ID,
			DiscoveredLabels: a.DiscoveredLabels,
			Labels:           publicLabels(a.Labels),
			ScrapePool:       a.Job,
			ScrapeURL:        scrapeURL(a.Labels),
			GlobalURL:        scrapeURL(a.Labels),
			ScrapeInterval:   a.Labels["__scrape_interval__"],
			ScrapeTimeout:    a.Labels["__scrape_timeout__"],
		})
	}
	for _, d := range dropped {
		t.DroppedTargets = append(t.DroppedTargets, web.DroppedTarget{DiscoveredLabels: d.DiscoveredLabels, ScrapePool: d.Job, Reason: d.Reason})
		t.DroppedTargetCounts[d.Job]++
	}
	return t
}

// scraperTargets is one scraper's view: the targets it owns.
func scraperTargets(s *scraper.Scraper) web.Targets {
	var t web.Targets
	for _, st := range s.Targets() {
		t.ActiveTargets = append(t.ActiveTargets, web.ActiveTarget{
			ID:                 st.ID,
			DiscoveredLabels:   st.DiscoveredLabels,
			Labels:             st.Labels,
			ScrapePool:         st.ScrapePool,
			ScrapeURL:          st.ScrapeURL,
			GlobalURL:          st.ScrapeURL,
			LastError:          st.LastError,
			LastScrape:         st.LastScrape,
			LastScrapeDuration: st.LastScrapeDuration.Seconds(),
			Health:             st.Health,
			Scraper:            st.Scraper,
			Series:             st.Series,
		})
	}
	return t
}

// localScrapers merges the catalog with in-process scrapers (allot all).
func localScrapers(d *discoverer.Discoverer, scrapers []*scraper.Scraper) web.TargetSource {
	return web.TargetSourceFunc(func(context.Context) (web.Targets, error) {
		owned := make([]web.Targets, len(scrapers))
		for i, s := range scrapers {
			owned[i] = scraperTargets(s)
		}
		return web.Merge(catalogTargets(d), owned...), nil
	})
}

// remoteScrapers merges the catalog with what every registered scraper
// reports over HTTP (a discoverer in a distributed deployment).
func remoteScrapers(d *discoverer.Discoverer, cli *clientv3.Client, ks leases.Keyspace) web.TargetSource {
	return web.TargetSourceFunc(func(ctx context.Context) (web.Targets, error) {
		if web.LocalScope(ctx) {
			return catalogTargets(d), nil
		}
		members, _, err := leases.ListMembers(ctx, cli, ks)
		if err != nil {
			return catalogTargets(d), err
		}
		var addrs []string
		for _, m := range members {
			if m.Addr != "" && (m.Kind == "" || m.Kind == "scraper") {
				addrs = append(addrs, m.Addr)
			}
		}
		owned, err := web.Remote{}.Fetch(ctx, addrs)
		return web.Merge(catalogTargets(d), owned...), err
	})
}
