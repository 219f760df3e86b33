package leases

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Load is a scraper's load report. The totals live at load/<scraper>, the
// per-target figures in chunks at load/<scraper>/<n>, all on the scraper's
// session lease so that a dead scraper's report goes with it.
//
// Why chunks: one value with every target's load grows to etcd's 1.5 MiB
// request limit at about 13k targets, and rewriting it every few seconds
// costs etcd bandwidth and history in proportion to the targets. Per-target
// figures rarely change enough to matter, so PutLoad rewrites only the
// chunks whose content changed (see [TargetLoad] for what counts as a
// change); the small totals key is what changes every report.
type Load struct {
	Scraper                string    `json:"scraper"`
	Targets                int       `json:"targets"`
	Series                 int64     `json:"series"`
	SamplesPerSecond       float64   `json:"samples_per_second"`
	ScrapeSecondsPerSecond float64   `json:"scrape_seconds_per_second"`
	Updated                time.Time `json:"updated"`
	// Chunks is how many per-target chunks the report has (set by PutLoad).
	Chunks int `json:"chunks,omitempty"`
	// PerTarget holds each target's figures, stored in the chunks.
	PerTarget map[string]TargetLoad `json:"-"`
}

// TargetLoad is one target's share of a Load.
//
// The rates are stored to three significant digits, and a rate that moved
// by less than a factor [loadRateSlack] since PutLoad last stored it does
// not count as a change of its chunk: a scrape's duration changes with
// every scrape, and a chunk of 2000 targets rewritten every report for that
// would cost etcd what chunking saves. When a chunk is written anyway (a
// target's series or zone changed, a target came or went), every rate in
// it is stored afresh. So a stored rate is at most a factor 1.5 off the
// reported one.
type TargetLoad struct {
	// Series is the target's active series: what the rebalancer balances.
	Series int64 `json:"series"`
	// SamplesPerSecond is the target's series over its scrape interval.
	SamplesPerSecond float64 `json:"samples_per_second"`
	// ScrapeSecondsPerSecond is the target's scrape duration over its
	// scrape interval: the share of a scrape goroutine it keeps busy.
	ScrapeSecondsPerSecond float64 `json:"scrape_seconds_per_second"`
	// Zone is the target's zone as the scraper read it from the target's
	// labels, "" if none: a zone-aware rebalancer keeps the target in it.
	Zone string `json:"zone,omitempty"`
}

// loadChunkTargets bounds a chunk to about 2000 targets (~40 KB with every
// figure, ~48 KB with a zone).
const loadChunkTargets = 2000

// loadRateSlack is the factor by which a stored per-target rate may differ
// from the reported one before its chunk is rewritten for it.
const loadRateSlack = 1.5

func loadChunkKey(ks Keyspace, scraper string, n int) string {
	return ks.Load(scraper) + "/" + strconv.Itoa(n)
}

// PutLoad stores l on s's lease. A zero Updated is set to now. Chunks whose
// content is what this session last wrote, but for rates within
// loadRateSlack of it, are not written again.
func PutLoad(ctx context.Context, s *Session, ks Keyspace, l Load) error {
	if err := checkID("scraper", l.Scraper); err != nil {
		return fmt.Errorf("put load: %w", err)
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, err)
	}
	if l.Updated.IsZero() {
		l.Updated = time.Now()
	}
	n := (len(l.PerTarget) + loadChunkTargets - 1) / loadChunkTargets
	chunks := make([][]string, n)
	for i := range chunks {
		chunks[i] = make([]string, 0, loadChunkTargets)
	}
	for t := range l.PerTarget {
		h := fnv.New32a()
		h.Write([]byte(t))
		i := int(h.Sum32()) % n
		chunks[i] = append(chunks[i], t)
	}
	l.Chunks = n

	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if s.loadWritten == nil {
		s.loadWritten = map[string]string{}
	}
	var ops []clientv3.Op
	written := map[string]string{}
	var buf []byte
	for i, ids := range chunks {
		key := loadChunkKey(ks, l.Scraper, i)
		if old, ok := s.loadWritten[key]; ok && chunkCurrent(old, ids, l.PerTarget) {
			written[key] = old
			continue
		}
		slices.Sort(ids)
		buf = appendChunk(buf[:0], ids, l.PerTarget)
		v := string(buf)
		written[key] = v
		ops = append(ops, clientv3.OpPut(key, v, clientv3.WithLease(s.id)))
	}
	for key := range s.loadWritten {
		if _, ok := written[key]; !ok && strings.HasPrefix(key, ks.Load(l.Scraper)+"/") {
			ops = append(ops, clientv3.OpDelete(key))
		}
	}
	// Chunks first, one request each (a txn would share the request size
	// limit), then the totals that say how many chunks to read.
	for _, op := range ops {
		if _, err := s.cli.Do(ctx, op); err != nil {
			s.loadWritten = nil // unknown state: rewrite everything next time
			return fmt.Errorf("put load of %s: %w", l.Scraper, leaseErr(err))
		}
	}
	s.loadWritten = written
	v, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, err)
	}
	if _, err := s.cli.Put(ctx, ks.Load(l.Scraper), string(v), clientv3.WithLease(s.id)); err != nil {
		return fmt.Errorf("put load of %s: %w", l.Scraper, leaseErr(err))
	}
	return nil
}

// chunkCurrent says whether old, a chunk as written before, still stands
// for the targets ids of per: the same targets with the same series and
// zones, and rates within loadRateSlack.
func chunkCurrent(old string, ids []string, per map[string]TargetLoad) bool {
	prev, err := decodeChunk([]byte(old))
	if err != nil || len(prev) != len(ids) {
		return false
	}
	for _, id := range ids {
		p, ok := prev[id]
		tl := per[id]
		if !ok || p.Series != tl.Series || p.Zone != tl.Zone ||
			!near(p.SamplesPerSecond, round3(tl.SamplesPerSecond)) ||
			!near(p.ScrapeSecondsPerSecond, round3(tl.ScrapeSecondsPerSecond)) {
			return false
		}
	}
	return true
}

// near says whether stored rate a may stand for rate b: both zero, or
// within a factor loadRateSlack of each other.
func near(a, b float64) bool {
	if a == b {
		return true
	}
	if a <= 0 || b <= 0 {
		return false
	}
	return max(a, b) <= loadRateSlack*min(a, b)
}

// appendChunk appends the chunk of targets ids (sorted) to buf: a JSON
// object from target ID to its figures. A target with series only is its
// series, as in the first format ({"<id>": series}), which old reports
// still have; otherwise an array [series, samples/s, scrape s/s] with the
// zone as a fourth element if it has one. Rates have three significant
// digits, which is all a load report needs and keeps a target at ~38 bytes.
func appendChunk(buf []byte, ids []string, per map[string]TargetLoad) []byte {
	buf = append(buf, '{')
	for i, id := range ids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, id)
		buf = append(buf, ':')
		tl := per[id]
		sps, ssps := round3(tl.SamplesPerSecond), round3(tl.ScrapeSecondsPerSecond)
		if sps == 0 && ssps == 0 && tl.Zone == "" {
			buf = strconv.AppendInt(buf, tl.Series, 10)
			continue
		}
		buf = append(buf, '[')
		buf = strconv.AppendInt(buf, tl.Series, 10)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, sps, 'g', -1, 64)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, ssps, 'g', -1, 64)
		if tl.Zone != "" {
			buf = append(buf, ',')
			buf = appendJSONString(buf, tl.Zone)
		}
		buf = append(buf, ']')
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string. Target IDs and zones are
// plain ASCII in practice; anything else goes through encoding/json.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			v, _ := json.Marshal(s) // a string always marshals
			return append(buf, v...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// round3 rounds v to three significant digits; NaN, infinities and
// negative values, which no rate can be, become 0.
func round3(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 1) {
		return 0
	}
	var b [32]byte
	r, err := strconv.ParseFloat(string(strconv.AppendFloat(b[:0], v, 'g', 3, 64)), 64)
	if err != nil {
		return 0
	}
	return r
}

// loadEntry decodes one chunk entry in either form appendChunk writes, for
// decodeChunkJSON. Elements after the fourth are ignored, so that a later
// version can add figures without its chunks failing to decode here.
type loadEntry TargetLoad

func (e *loadEntry) UnmarshalJSON(b []byte) error {
	*e = loadEntry{}
	// The first form is the series alone; of the array of the current one,
	// a Go array takes the known elements and drops the rest.
	var elems [4]json.RawMessage
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &elems); err != nil {
			return err
		}
	} else {
		elems[0] = b
	}
	for i, el := range elems {
		if el == nil {
			break // the array ended
		}
		var err error
		switch s := string(el); i {
		case 0:
			e.Series, err = strconv.ParseInt(s, 10, 64)
		case 1:
			e.SamplesPerSecond, err = strconv.ParseFloat(s, 64)
		case 2:
			e.ScrapeSecondsPerSecond, err = strconv.ParseFloat(s, 64)
		case 3:
			err = json.Unmarshal(el, &e.Zone)
		}
		if err != nil {
			return fmt.Errorf("load chunk entry element %d: %w", i, err)
		}
	}
	return nil
}

// decodeChunk reads a chunk in either form: the first ({"<id>": series})
// or the current one (see appendChunk). Chunks as appendChunk writes them
// are read by a scanner of that subset of JSON, several times faster than
// encoding/json (it matters to a new rebalancer leader reading 800k
// targets); anything else, and anything malformed, by encoding/json.
func decodeChunk(v []byte) (map[string]TargetLoad, error) {
	if out, ok := scanChunk(v); ok {
		return out, nil
	}
	return decodeChunkJSON(v)
}

// decodeChunkJSON is decodeChunk by encoding/json.
func decodeChunkJSON(v []byte) (map[string]TargetLoad, error) {
	var c map[string]loadEntry
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, err
	}
	out := make(map[string]TargetLoad, len(c))
	for t, e := range c {
		out[t] = TargetLoad(e)
	}
	return out, nil
}

// scanChunk reads a chunk without spaces or escapes, with entries as
// appendChunk writes them (four elements at most); ok is false for
// anything else.
func scanChunk(v []byte) (out map[string]TargetLoad, ok bool) {
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return nil, false
	}
	out = make(map[string]TargetLoad, bytes.Count(v, []byte{':'}))
	zones := map[string]string{} // one string per zone, not per target
	b := v[1 : len(v)-1]
	for len(b) > 0 {
		key, rest, ok := scanString(b)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return nil, false
		}
		b = rest[1:]
		var tl TargetLoad
		if len(b) > 0 && b[0] == '[' {
			b = b[1:]
			for i := 0; ; i++ {
				if len(b) > 0 && b[0] == ']' && i > 0 {
					b = b[1:]
					break
				}
				if i > 0 {
					if len(b) == 0 || b[0] != ',' {
						return nil, false
					}
					b = b[1:]
				}
				var err error
				switch i {
				case 0:
					var tok []byte
					tok, b = scanNumber(b)
					tl.Series, err = strconv.ParseInt(string(tok), 10, 64)
				case 1, 2:
					var tok []byte
					tok, b = scanNumber(b)
					f := &tl.SamplesPerSecond
					if i == 2 {
						f = &tl.ScrapeSecondsPerSecond
					}
					*f, err = strconv.ParseFloat(string(tok), 64)
				case 3:
					var z []byte
					var ok bool
					if z, b, ok = scanString(b); !ok {
						return nil, false
					}
					zone, seen := zones[string(z)]
					if !seen {
						zone = string(z)
						zones[zone] = zone
					}
					tl.Zone = zone
				default:
					return nil, false // a later version's element: encoding/json skips it
				}
				if err != nil {
					return nil, false
				}
			}
		} else {
			var tok []byte
			var err error
			tok, b = scanNumber(b)
			if tl.Series, err = strconv.ParseInt(string(tok), 10, 64); err != nil {
				return nil, false
			}
		}
		out[string(key)] = tl
		if len(b) > 0 {
			if b[0] != ',' || len(b) == 1 {
				return nil, false
			}
			b = b[1:]
		}
	}
	return out, true
}

// scanString splits a JSON string without escapes off the front of b and
// returns its content.
func scanString(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[1:i], b[i+1:], true
		case c == '\\' || c < 0x20:
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// scanNumber splits the characters a JSON number can have off the front
// of b; strconv then checks them (a little more leniently than JSON: it
// takes "+1", ".5" or "01", which appendChunk never writes).
func scanNumber(b []byte) (tok, rest []byte) {
	i := 0
	for i < len(b) && (b[i] >= '0' && b[i] <= '9' || b[i] == '-' || b[i] == '+' || b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		i++
	}
	return b[:i], b[i:]
}

// ListLoads returns the live load reports by scraper ID, with their
// per-target figures. Entries that do not decode are skipped. It reads every
// chunk: a reader that needs the series repeatedly follows them with
// [WatchLoads] instead.
func ListLoads(ctx context.Context, cli *clientv3.Client, ks Keyspace) (map[string]Load, error) {
	out := map[string]Load{}
	per := map[string]map[string]TargetLoad{}
	_, err := scanPrefix(ctx, cli, ks.Loads(), func() { clear(out); clear(per) }, func(kv *mvccpb.KeyValue) error {
		rest := strings.TrimPrefix(string(kv.Key), ks.Loads())
		if scraper, _, isChunk := strings.Cut(rest, "/"); isChunk {
			c, err := decodeChunk(kv.Value)
			if err != nil {
				return nil
			}
			m := per[scraper]
			if m == nil {
				m = make(map[string]TargetLoad, len(c))
				per[scraper] = m
			}
			maps.Copy(m, c)
			return nil
		}
		var l Load
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return nil
		}
		l.Scraper = rest
		out[l.Scraper] = l
		return nil
	})
	if err != nil {
		return nil, err
	}
	for id, l := range out {
		l.PerTarget = per[id]
		out[id] = l
	}
	return out, nil
}

// LoadSummaries returns the live load reports without their per-target
// figures: O(scrapers) to read, for whoever only needs the totals.
func LoadSummaries(ctx context.Context, cli *clientv3.Client, ks Keyspace) (map[string]Load, error) {
	out := map[string]Load{}
	_, err := scanPrefix(ctx, cli, ks.Loads(), func() { clear(out) }, func(kv *mvccpb.KeyValue) error {
		rest := strings.TrimPrefix(string(kv.Key), ks.Loads())
		if strings.Contains(rest, "/") {
			return nil
		}
		var l Load
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return nil
		}
		l.Scraper = rest
		out[rest] = l
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
