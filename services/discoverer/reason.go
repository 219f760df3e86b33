package discoverer

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/scrape"
)

// Reasons a target is dropped without any relabel rule being the cause.
const (
	// reasonNoAddress is for a target discovered without __address__.
	reasonNoAddress = "no address: discovered without __address__"
	// reasonRelabelDroppedUnknown is for a target relabel_configs dropped
	// as a whole but that no single rule drops when they are replayed one
	// by one; it cannot happen unless Prometheus's relabelling changes.
	reasonRelabelDroppedUnknown = "relabel_configs dropped it"
)

// dropReasons explains why targets were dropped. Replaying the rules one at
// a time costs more than scrape.PopulateLabels, so it is done for dropped
// targets only; the descriptions of rules, which many dropped targets
// share, are built once per rule and shared, so a catalog with many dropped
// targets holds one string per rule, not one per target.
type dropReasons struct {
	lb *labels.Builder
	// byRule caches the reason naming a rule, by the rule and what it did
	// (dropped the target, removed __address__...). Keyed by pointer: the
	// rules of a loaded config never change, and the cache is cleared when
	// the jobs are replaced (see catalog.setJobs).
	byRule map[ruleEffect]string
}

type ruleEffect struct {
	rule   *relabel.Config
	index  int
	effect string
}

func newDropReasons() *dropReasons {
	return &dropReasons{lb: labels.NewBuilder(labels.EmptyLabels()), byRule: map[ruleEffect]string{}}
}

// reset forgets the cached reasons (the rules they point to may be gone).
func (r *dropReasons) reset() { clear(r.byRule) }

// explain says why PopulateLabels dropped a target: err is what it
// returned, nil if relabelling dropped the target.
//
// A target relabel_configs dropped is named by the rule that dropped it:
// `relabel_configs[2] (action keep, source_labels [__meta_x], regex "foo")
// dropped it`. A target with no address after relabelling names the rule
// that removed it. Other errors (a bad scrape interval label...) are given
// as PopulateLabels gave them, followed by the rule that last set the label
// at fault, if one did.
func (r *dropReasons) explain(cfg *config.ScrapeConfig, tl, tgl model.LabelSet, err error) string {
	rules := cfg.RelabelConfigs
	scrape.PopulateDiscoveredLabels(r.lb, cfg, tl, tgl)
	if err == nil {
		for i, rule := range rules {
			if !relabel.ProcessBuilder(r.lb, rule) {
				return r.reason(rule, i, "dropped it")
			}
		}
		return reasonRelabelDroppedUnknown
	}
	msg := err.Error()
	label := ""
	switch {
	case msg == "no address":
		if r.lb.Get(model.AddressLabel) == "" {
			return reasonNoAddress
		}
		label = model.AddressLabel
	case strings.Contains(msg, "scrape interval"):
		label = model.ScrapeIntervalLabel
	case strings.Contains(msg, "scrape timeout"):
		label = model.ScrapeTimeoutLabel
	default:
		// An address or label value PopulateLabels rejects: the label
		// is named in the error, the rule would be a guess.
		return msg
	}
	// Replay the rules and remember the last that changed the label.
	last, lastIdx := (*relabel.Config)(nil), -1
	prev := r.lb.Get(label)
	for i, rule := range rules {
		relabel.ProcessBuilder(r.lb, rule)
		if v := r.lb.Get(label); v != prev {
			last, lastIdx, prev = rule, i, v
		}
	}
	if last == nil {
		return msg
	}
	if label == model.AddressLabel {
		return "no address: " + r.reason(last, lastIdx, "removed __address__")
	}
	return msg + " (" + label + " set by " + r.reason(last, lastIdx, "") + ")"
}

func (r *dropReasons) reason(rule *relabel.Config, i int, effect string) string {
	k := ruleEffect{rule: rule, index: i, effect: effect}
	if s, ok := r.byRule[k]; ok {
		return s
	}
	s := describeRule(rule, i)
	if effect != "" {
		s += " " + effect
	}
	r.byRule[k] = s
	return s
}

// describeRule names a rule by its index and the fields that decide what
// its action does: `relabel_configs[2] (action keep, source_labels
// [__meta_x], regex "foo")`.
func describeRule(rule *relabel.Config, i int) string {
	var parts []string
	add := func(s string) { parts = append(parts, s) }
	add("action " + string(rule.Action))
	sources := func() {
		if len(rule.SourceLabels) > 0 {
			add("source_labels " + fmt.Sprint([]model.LabelName(rule.SourceLabels)))
			if rule.Separator != relabel.DefaultRelabelConfig.Separator {
				add("separator " + strconv.Quote(rule.Separator))
			}
		}
	}
	regex := func() { add("regex " + strconv.Quote(rule.Regex.String())) }
	target := func() { add("target_label " + rule.TargetLabel) }
	switch rule.Action {
	case relabel.Keep, relabel.Drop:
		sources()
		regex()
	case relabel.KeepEqual, relabel.DropEqual:
		sources()
		target()
	case relabel.Replace:
		sources()
		if rule.Regex.String() != relabel.DefaultRelabelConfig.Regex.String() {
			regex()
		}
		target()
		add("replacement " + strconv.Quote(rule.Replacement))
	case relabel.HashMod:
		sources()
		add("modulus " + strconv.FormatUint(rule.Modulus, 10))
		target()
	case relabel.LabelMap:
		regex()
		add("replacement " + strconv.Quote(rule.Replacement))
	case relabel.LabelDrop, relabel.LabelKeep:
		regex()
	default: // lowercase, uppercase
		sources()
		target()
	}
	return fmt.Sprintf("relabel_configs[%d] (%s)", i, strings.Join(parts, ", "))
}
