//go:build integration

package integration

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// window is what a scenario asserts on: the samples of some targets between
// from and to, around an event at ref.
type window struct {
	from, to, ref time.Time
	series        map[string][]int64 // instance → sample timestamps (ms), sorted
	missing       map[string]int
	extra         map[string]int
}

// analyse counts, per instance of series in [from, to]:
//
//   - missing samples: consecutive samples d apart with d > 1.5 intervals
//     miss round(d/interval) − 1 samples; from and to count as samples, so
//     a target not scraped again at all is caught too;
//   - extra samples: less than half an interval after the previous one.
//     One scraper never does that; two scrapers scraping the same target
//     do, and so does a handoff that moves the target's scrape schedule
//     forward.
//
// Keep to at least a second before the newest sample can have reached the
// sink.
func analyse(series map[string][]int64, ref, from, to time.Time) window {
	w := window{from: from, to: to, ref: ref, series: map[string][]int64{}, missing: map[string]int{}, extra: map[string]int{}}
	iv := interval.Milliseconds()
	gap := func(d int64) int {
		if d > iv+iv/2 {
			return int((d+iv/2)/iv) - 1
		}
		return 0
	}
	for k, ts := range series {
		var in []int64
		for _, x := range ts {
			if x >= from.UnixMilli() && x <= to.UnixMilli() {
				in = append(in, x)
			}
		}
		w.series[k] = in
		prev := from.UnixMilli()
		for i, x := range in {
			if i > 0 && x-prev < iv/2 {
				w.extra[k]++
			}
			w.missing[k] += gap(x - prev)
			prev = x
		}
		w.missing[k] += gap(to.UnixMilli() - prev)
		if w.missing[k] == 0 {
			delete(w.missing, k)
		}
	}
	return w
}

// only keeps the instances in keep.
func only(series map[string][]int64, keep []string) map[string][]int64 {
	out := map[string][]int64{}
	for _, k := range keep {
		if ts, ok := series[k]; ok {
			out[k] = ts
		} else {
			out[k] = nil
		}
	}
	return out
}

// except drops the instances in drop.
func except(series map[string][]int64, drop []string) map[string][]int64 {
	out := map[string][]int64{}
	for k, ts := range series {
		if !contains(drop, k) {
			out[k] = ts
		}
	}
	return out
}

// limits are what a scenario allows per target.
type limits struct {
	missing, extra int
	// total bounds missing+extra (0: no bound beyond the two).
	total int
}

// check reports every target beyond l, with its samples relative to the
// event, and logs a summary either way.
func (w window) check(t *testing.T, what string, l limits) {
	t.Helper()
	var keys []string
	for k := range w.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	bad := 0
	for _, k := range keys {
		m, x := w.missing[k], w.extra[k]
		if m > l.missing || x > l.extra || (l.total > 0 && m+x > l.total) {
			bad++
			t.Errorf("%s: %s: %d missing, %d extra samples (allowed %d, %d, together %d); samples at %s",
				what, k, m, x, l.missing, l.extra, l.total, w.timeline(k))
		}
	}
	missing, extra := 0, 0
	for _, n := range w.missing {
		missing += n
	}
	for _, n := range w.extra {
		extra += n
	}
	t.Logf("%s: %d targets, %d beyond limits; %d samples missing in %d targets, %d extra in %d targets (window %s .. %s around %s)",
		what, len(keys), bad, missing, len(w.missing), extra, len(w.extra),
		rel(w.from.Sub(w.ref)), rel(w.to.Sub(w.ref)), w.ref.Format("15:04:05.000"))
}

// timeline renders k's samples as offsets from the event.
func (w window) timeline(k string) string {
	var parts []string
	for _, ts := range w.series[k] {
		parts = append(parts, rel(time.UnixMilli(ts).Sub(w.ref)))
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

func rel(d time.Duration) string {
	return fmt.Sprintf("%+.1fs", d.Seconds())
}
