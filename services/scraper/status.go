package scraper

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// TargetStatus is one owned target as the status API shows it, in the
// shape of Prometheus's /api/v1/targets activeTargets.
type TargetStatus struct {
	ID         string
	Job        string
	ScrapePool string
	ScrapeURL  string
	// Health is "up", "down" or "unknown".
	Health             string
	LastError          string
	Labels             map[string]string
	DiscoveredLabels   map[string]string
	LastScrape         time.Time
	LastScrapeDuration time.Duration
	// ScrapeInterval is the target's interval.
	ScrapeInterval time.Duration
	// Scraper is this scraper's ID.
	Scraper string
	// Series is the number of samples the last forwarded scrape had.
	Series int
}

func (s *Scraper) setView(t events.Target) {
	s.viewMu.Lock()
	s.view[t.ID] = t
	s.viewMu.Unlock()
}

func (s *Scraper) delView(id string) {
	s.viewMu.Lock()
	delete(s.view, id)
	s.viewMu.Unlock()
}

// Targets lists the targets this scraper owns, sorted by job and URL. A
// target whose scrape loop has not started yet (or whose job config was
// rejected, said in LastError) shows health "unknown".
func (s *Scraper) Targets() []TargetStatus {
	s.viewMu.RLock()
	view := maps.Clone(s.view)
	jobErrs := maps.Clone(s.jobErrs)
	s.viewMu.RUnlock()

	out := make([]TargetStatus, 0, len(view))
	lb := labels.NewBuilder(labels.EmptyLabels())
	for job, ts := range s.mgr.TargetsActive() {
		for _, t := range ts {
			id := t.GetValue(targetIDLabel)
			if _, ok := view[id]; !ok {
				continue
			}
			delete(view, id)
			out = append(out, s.status(id, job, t, lb))
		}
	}
	for id, t := range view {
		lastErr := ""
		if msg, ok := jobErrs[t.Job]; ok {
			lastErr = "job config rejected: " + msg
		}
		out = append(out, TargetStatus{
			LastError:        lastErr,
			ID:               id,
			Job:              t.Job,
			ScrapePool:       t.Job,
			Health:           string(scrape.HealthUnknown),
			Labels:           publicLabels(t.Labels),
			DiscoveredLabels: maps.Clone(t.Labels),
			ScrapeInterval:   intervalOf(t.Labels[model.ScrapeIntervalLabel]),
			Scraper:          s.cfg.ID,
		})
	}
	slices.SortFunc(out, func(a, b TargetStatus) int {
		return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.ScrapeURL, b.ScrapeURL), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func (s *Scraper) status(id, job string, t *scrape.Target, lb *labels.Builder) TargetStatus {
	st := TargetStatus{
		ID:                 id,
		Job:                job,
		ScrapePool:         job,
		ScrapeURL:          t.URL().String(),
		Health:             string(t.Health()),
		Labels:             t.Labels(lb).Map(),
		DiscoveredLabels:   t.DiscoveredLabels(lb).Map(),
		LastScrape:         t.LastScrape(),
		LastScrapeDuration: t.LastScrapeDuration(),
		ScrapeInterval:     intervalOf(t.GetValue(model.ScrapeIntervalLabel)),
		Scraper:            s.cfg.ID,
	}
	// allot's own bookkeeping labels are not something discovery found.
	delete(st.DiscoveredLabels, targetIDLabel)
	delete(st.DiscoveredLabels, phaseLabel)
	if err := t.LastError(); err != nil {
		st.LastError = err.Error()
	}
	if n, _, ok := s.gate.stats(id); ok {
		st.Series = int(n)
	}
	return st
}

func publicLabels(ls map[string]string) map[string]string {
	out := make(map[string]string, len(ls))
	for k, v := range ls {
		if len(k) < 2 || k[:2] != model.ReservedLabelPrefix {
			out[k] = v
		}
	}
	return out
}

func intervalOf(v string) time.Duration {
	d, err := model.ParseDuration(v)
	if err != nil {
		return 0
	}
	return time.Duration(d)
}

// load is the scraper's load report: series from the gate (what the last
// forwarded scrape of each target had), scrape time from the scrape
// manager, zones from the targets' labels. It skips the label work of
// Targets: it runs every few seconds.
func (s *Scraper) load(now time.Time) leases.Load {
	s.viewMu.RLock()
	zones := make(map[string]string, len(s.view))
	for id, t := range s.view {
		zones[id] = targetZone(t, s.cfg.ZoneLabel)
	}
	s.viewMu.RUnlock()
	l := leases.Load{
		Scraper:   s.cfg.ID,
		Targets:   len(zones),
		PerTarget: make(map[string]leases.TargetLoad, len(zones)),
		Updated:   now,
	}
	for _, ts := range s.mgr.TargetsActive() {
		for _, t := range ts {
			id := t.GetValue(targetIDLabel)
			zone, ok := zones[id]
			if !ok {
				continue
			}
			series, _, _ := s.gate.stats(id)
			tl := leases.TargetLoad{Series: series, Zone: zone}
			if iv := intervalOf(t.GetValue(model.ScrapeIntervalLabel)).Seconds(); iv > 0 {
				tl.SamplesPerSecond = float64(series) / iv
				tl.ScrapeSecondsPerSecond = t.LastScrapeDuration().Seconds() / iv
			}
			l.Series += tl.Series
			l.SamplesPerSecond += tl.SamplesPerSecond
			l.ScrapeSecondsPerSecond += tl.ScrapeSecondsPerSecond
			l.PerTarget[id] = tl
		}
	}
	return l
}
