// Package sink is a debug backend: it receives OTLP/HTTP metrics and
// Prometheus remote write, records every sample per series, and shows what
// arrived. `allot all` starts one when no exporter is configured, `allot
// sink` runs it alone (docker compose uses it), and tests use it to prove that
// no sample was lost or duplicated across a handoff.
package sink

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// Sample is one recorded value.
type Sample struct {
	T time.Time
	V float64
	// Stale is set for points flagged NoRecordedValue (staleness markers).
	Stale bool
}

// Series identifies what a sample belongs to: metric name plus resource
// and point attributes, rendered as a sorted label string.
type Series string

// Sink records samples. Its zero value is not usable; call New.
type Sink struct {
	maxPerSeries int

	mu       sync.Mutex
	series   map[Series][]Sample
	requests map[string]int // by protocol
	points   int
	last     time.Time
}

// New returns a sink that keeps at most maxPerSeries samples per series
// (the oldest go first); zero means 100000.
func New(maxPerSeries int) *Sink {
	if maxPerSeries <= 0 {
		maxPerSeries = 100000
	}
	return &Sink{maxPerSeries: maxPerSeries, series: map[Series][]Sample{}, requests: map[string]int{}}
}

// ConsumeMetrics records md. It lets the sink stand in for an exporter in process.
func (s *Sink) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	s.record("otlp", md)
	return nil
}

func (s *Sink) add(key Series, smp Sample) {
	ss := append(s.series[key], smp)
	if len(ss) > s.maxPerSeries {
		ss = ss[len(ss)-s.maxPerSeries:]
	}
	s.series[key] = ss
	s.points++
}

func (s *Sink) record(proto string, md pmetric.Metrics) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[proto]++
	s.last = time.Now()
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		res := attrString(rm.Resource().Attributes(), "service.name", "service.instance.id")
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				s.recordMetric(res, ms.At(k))
			}
		}
	}
}

func (s *Sink) recordMetric(res string, m pmetric.Metric) {
	key := func(suffix string, attrs pcommon.Map) Series {
		return Series(m.Name() + suffix + "{" + joinNonEmpty(res, attrString(attrs)) + "}")
	}
	number := func(suffix string, dps pmetric.NumberDataPointSlice) {
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			v := dp.DoubleValue()
			if dp.ValueType() == pmetric.NumberDataPointValueTypeInt {
				v = float64(dp.IntValue())
			}
			s.add(key(suffix, dp.Attributes()), Sample{T: dp.Timestamp().AsTime(), V: v, Stale: dp.Flags().NoRecordedValue()})
		}
	}
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		number("", m.Gauge().DataPoints())
	case pmetric.MetricTypeSum:
		number("", m.Sum().DataPoints())
	case pmetric.MetricTypeHistogram:
		dps := m.Histogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			s.add(key("_count", dp.Attributes()), Sample{T: dp.Timestamp().AsTime(), V: float64(dp.Count()), Stale: dp.Flags().NoRecordedValue()})
		}
	case pmetric.MetricTypeExponentialHistogram:
		dps := m.ExponentialHistogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			s.add(key("_count", dp.Attributes()), Sample{T: dp.Timestamp().AsTime(), V: float64(dp.Count()), Stale: dp.Flags().NoRecordedValue()})
		}
	case pmetric.MetricTypeSummary:
		dps := m.Summary().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			s.add(key("_count", dp.Attributes()), Sample{T: dp.Timestamp().AsTime(), V: float64(dp.Count()), Stale: dp.Flags().NoRecordedValue()})
		}
	}
}

// attrString renders attributes as sorted k="v" pairs; with keys given,
// only those keys.
func attrString(attrs pcommon.Map, keys ...string) string {
	var parts []string
	attrs.Range(func(k string, v pcommon.Value) bool {
		if len(keys) > 0 && !contains(keys, k) {
			return true
		}
		parts = append(parts, fmt.Sprintf("%s=%q", k, v.AsString()))
		return true
	})
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "," + b
}

func (s *Sink) recordRemoteWrite(req *prompb.WriteRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests["remote_write"]++
	s.last = time.Now()
	for _, ts := range req.Timeseries {
		name := ""
		var parts []string
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				name = l.Value
				continue
			}
			parts = append(parts, fmt.Sprintf("%s=%q", l.Name, l.Value))
		}
		sort.Strings(parts)
		key := Series(name + "{" + strings.Join(parts, ",") + "}")
		for _, smp := range ts.Samples {
			s.add(key, Sample{T: time.UnixMilli(smp.Timestamp), V: smp.Value})
		}
	}
}

// Series lists the recorded series, sorted.
func (s *Sink) Series() []Series {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Series, 0, len(s.series))
	for k := range s.series {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Samples returns a copy of the samples of one series, in arrival order.
func (s *Sink) Samples(key Series) []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.series[key]...)
}

// Find returns the series whose key starts with prefix and contains every
// fragment (e.g. `up{`, `service.instance.id="demo-3"`).
func (s *Sink) Find(prefix string, fragments ...string) []Series {
	var out []Series
	for _, k := range s.Series() {
		if !strings.HasPrefix(string(k), prefix) {
			continue
		}
		ok := true
		for _, f := range fragments {
			if !strings.Contains(string(k), f) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, k)
		}
	}
	return out
}

// Stats summarises what arrived.
type Stats struct {
	Series   int            `json:"series"`
	Points   int            `json:"points"`
	Requests map[string]int `json:"requests"`
	Last     time.Time      `json:"last"`
}

// Stats returns totals.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		req[k] = v
	}
	return Stats{Series: len(s.series), Points: s.points, Requests: req, Last: s.last}
}

// maxBody bounds a request body so a misbehaving client cannot exhaust memory.
const maxBody = 64 << 20

func readBody(r *http.Request) ([]byte, error) {
	var rd io.Reader = http.MaxBytesReader(nil, r.Body, maxBody)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(rd)
		if err != nil {
			return nil, fmt.Errorf("gzip body: %w", err)
		}
		defer zr.Close()
		rd = io.LimitReader(zr, maxBody)
	case "zstd":
		zr, err := zstd.NewReader(rd, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxBody))
		if err != nil {
			return nil, fmt.Errorf("zstd body: %w", err)
		}
		defer zr.Close()
		rd = io.LimitReader(zr, maxBody)
	default:
		return nil, fmt.Errorf("Content-Encoding %q: want gzip, zstd or none", enc)
	}
	return io.ReadAll(rd)
}

func (s *Sink) serveOTLP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := readBody(r)
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	req := pmetricotlp.NewExportRequest()
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/json") {
		err = req.UnmarshalJSON(body)
	} else {
		err = req.UnmarshalProto(body)
	}
	if err != nil {
		http.Error(w, "decode OTLP request: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.record("otlp", req.Metrics())
	resp := pmetricotlp.NewExportResponse()
	if strings.HasPrefix(ct, "application/json") {
		b, _ := resp.MarshalJSON()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		return
	}
	b, _ := resp.MarshalProto()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

func (s *Sink) serveRemoteWrite(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	compressed, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	raw, err := snappy.Decode(nil, compressed)
	if err != nil {
		http.Error(w, "snappy: "+err.Error(), http.StatusBadRequest)
		return
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		http.Error(w, "decode WriteRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.recordRemoteWrite(&req)
	w.WriteHeader(http.StatusNoContent)
}
