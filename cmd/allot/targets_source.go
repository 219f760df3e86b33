package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
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

// discovererView is the targets view of a process that runs the
// discoverer: its catalog (every published and dropped target), merged with
// what the scrapers in this process own and what every other scraper in the
// pool reports over HTTP; a target no scraper reports on takes its owner
// from the etcd claims (an OTel Collector's, or a scraper's that did not
// answer), its health staying unknown.
type discovererView struct {
	d   *discoverer.Discoverer
	cli *clientv3.Client
	ks  leases.Keyspace
	// local are the scrapers running in this process (allot all), read
	// directly; self is the address they advertise, which is not asked
	// over HTTP.
	local []*scraper.Scraper
	self  string
}

// localScrapers is the view of allot all: the catalog, the in-process
// scrapers, and any scraper that joined the pool from another process
// (self is the address the in-process scrapers advertise).
func localScrapers(d *discoverer.Discoverer, scrapers []*scraper.Scraper, cli *clientv3.Client, ks leases.Keyspace, self string) web.TargetSource {
	return &discovererView{d: d, cli: cli, ks: ks, local: scrapers, self: self}
}

// remoteScrapers is the view of a discoverer in a distributed deployment.
func remoteScrapers(d *discoverer.Discoverer, cli *clientv3.Client, ks leases.Keyspace) web.TargetSource {
	return &discovererView{d: d, cli: cli, ks: ks}
}

// Targets builds the view. Its error lists what is missing (members not
// listed, a scraper that did not answer, claims not read); what it returns
// is then incomplete, not wrong.
func (v *discovererView) Targets(ctx context.Context) (web.Targets, error) {
	owned := make([]web.Targets, 0, len(v.local))
	for _, s := range v.local {
		owned = append(owned, scraperTargets(s))
	}
	if web.LocalScope(ctx) {
		if len(v.local) == 0 {
			return catalogTargets(v.d), nil
		}
		// A peer's question: only what this process's scrapers own. The
		// asker has the catalog; this one's unowned entries would only
		// compete with the real owner's report.
		t := web.Merge(web.Targets{}, owned...)
		t.DroppedTargets = []web.DroppedTarget{}
		return t, nil
	}
	t := catalogTargets(v.d)
	members, _, err := leases.ListMembers(ctx, v.cli, v.ks)
	if err != nil {
		return v.withClaims(ctx, web.Merge(t, owned...), fmt.Errorf("list members: %w", err))
	}
	seen := map[string]bool{v.self: true}
	var addrs []string
	for _, m := range members {
		// Collectors poll the Target Allocator API and serve no targets
		// API; several members of one process share its address.
		if m.Addr == "" || seen[m.Addr] || (m.Kind != "" && m.Kind != leases.KindScraper) {
			continue
		}
		seen[m.Addr] = true
		addrs = append(addrs, m.Addr)
	}
	remote, err := web.Remote{}.Fetch(ctx, addrs)
	return v.withClaims(ctx, web.Merge(t, append(owned, remote...)...), err)
}

// withClaims fills in, from the etcd claims, the owners of the targets no
// scraper reported on. The claims are read only when there are such
// targets: with every owner a scraper that answers, a page view costs no
// etcd read. err is what went wrong before; a failed read adds to it.
func (v *discovererView) withClaims(ctx context.Context, t web.Targets, err error) (web.Targets, error) {
	if !slices.ContainsFunc(t.ActiveTargets, func(a web.ActiveTarget) bool { return a.Scraper == "" }) {
		return t, err
	}
	claims, _, cerr := leases.ListClaims(ctx, v.cli, v.ks)
	if cerr != nil {
		return t, errors.Join(err, fmt.Errorf("owners from etcd claims: %w", cerr))
	}
	return web.FillOwners(t, func(id string) (string, bool) {
		c, ok := claims[id]
		return c.Owner, ok
	}), err
}
