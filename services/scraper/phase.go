package scraper

import (
	"fmt"
	"hash/fnv"
	"maps"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/util/osutil"
)

// phaseLabel is a hidden target label whose value moves the target's scrape
// phase. Prometheus starts each target at
//
//	(hash(target labels, URL) XOR seed) mod interval
//
// into every interval, where seed hashes the host's FQDN and the external
// labels. The seed spreads HA pairs apart, which is right for Prometheus and
// wrong for allot: when a target changes scraper, the new owner would scrape
// it at a different phase and one sample would be late or doubled. The seed
// cannot be set (the option is private), but the hash can: each scraper
// picks a value of this label that puts the target at a phase derived from
// its id alone, the same on every host. Labels starting with "__" never
// reach a series.
const phaseLabel = "__allot_phase__"

// maxPhaseTries bounds the search for a phase label value. With the
// tolerance below about 100 tries are expected; 100 times that fails with
// probability e^-100.
const maxPhaseTries = 10000

// phaser picks phase label values for one applied scrape config.
type phaser struct {
	seed uint64
	jobs map[string]*config.ScrapeConfig
	lb   *labels.Builder
}

// newPhaser computes the offset seed exactly as the scrape manager does
// when it applies cfg: FNV-1a of the FQDN followed by the external labels.
func newPhaser(cfg *config.Config, fqdn string) (*phaser, error) {
	if fqdn == "" {
		var err error
		if fqdn, err = osutil.GetFQDN(); err != nil {
			return nil, fmt.Errorf("host name for the scrape offset seed: %w", err)
		}
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s%s", fqdn, cfg.GlobalConfig.ExternalLabels.String())
	p := &phaser{seed: h.Sum64(), jobs: make(map[string]*config.ScrapeConfig, len(cfg.ScrapeConfigs)), lb: labels.NewBuilder(labels.EmptyLabels())}
	for _, sc := range cfg.ScrapeConfigs {
		p.jobs[sc.JobName] = sc
	}
	return p, nil
}

// wantPhase is where in each interval a target is scraped, on any host.
func wantPhase(id string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(id))
	return time.Duration(h.Sum64() % uint64(interval))
}

// phaseTolerance is how far from its wanted phase a target may start.
func phaseTolerance(interval time.Duration) time.Duration {
	return max(interval/200, time.Millisecond)
}

// group returns tg with the phase label set so that job's scrape loop for
// it starts at wantPhase(id), or tg unchanged (and false) if the target is
// one the scrape manager would reject or no value was found. prev, the
// value the target had under an earlier config, is tried first: it is
// usually still right (the job's interval and URL did not change), and
// checking it costs one hash instead of a search.
func (p *phaser) group(tg *targetgroup.Group, job, id, prev string) (*targetgroup.Group, bool) {
	sc, ok := p.jobs[job]
	if !ok || len(tg.Targets) != 1 {
		return tg, false
	}
	lset, err := scrape.PopulateLabels(p.lb, sc, tg.Targets[0], tg.Labels)
	if err != nil || lset.IsEmpty() {
		return tg, false
	}
	iv, err := model.ParseDuration(lset.Get(model.ScrapeIntervalLabel))
	interval := time.Duration(iv)
	if err != nil || interval <= 0 {
		return tg, false
	}
	url := scrape.NewTarget(lset, sc, tg.Targets[0], tg.Labels).URL().String()
	want, tol := wantPhase(id, interval), phaseTolerance(interval)
	p.lb.Reset(lset)
	fits := func(v string) bool {
		p.lb.Set(phaseLabel, v)
		return circularDistance(scrapeOffset(p.lb.Labels(), url, p.seed, interval), want, interval) <= tol
	}
	v := prev
	if v == "" || !fits(v) {
		v = ""
		for n := range maxPhaseTries {
			if c := strconv.Itoa(n); fits(c) {
				v = c
				break
			}
		}
	}
	if v == "" {
		return tg, false
	}
	out := &targetgroup.Group{Source: tg.Source, Labels: tg.Labels, Targets: []model.LabelSet{make(model.LabelSet, len(tg.Targets[0])+1)}}
	maps.Copy(out.Targets[0], tg.Targets[0])
	out.Targets[0][phaseLabel] = model.LabelValue(v)
	return out, true
}

// scrapeOffset is the phase the scrape manager gives a target with these
// final labels and URL: Target.hash XOR seed, modulo the interval.
func scrapeOffset(lset labels.Labels, url string, seed uint64, interval time.Duration) time.Duration {
	h := fnv.New64a()
	var buf [20]byte
	d := strconv.AppendUint(buf[:0], lset.Hash(), 10)
	// Prometheus writes the label hash with "%016d".
	for range 16 - len(d) {
		h.Write([]byte{'0'})
	}
	h.Write(d)
	h.Write([]byte(url))
	return time.Duration((h.Sum64() ^ seed) % uint64(interval))
}

func circularDistance(a, b, interval time.Duration) time.Duration {
	d := a - b
	if d < 0 {
		d = -d
	}
	return min(d, interval-d)
}
