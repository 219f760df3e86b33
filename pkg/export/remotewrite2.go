package export

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Remote write protobuf messages, named as Prometheus's remote_write
// protobuf_message names them.
const (
	// RemoteWriteV1 is remote write 1.0 (prometheus.WriteRequest).
	RemoteWriteV1 = "prometheus.WriteRequest"
	// RemoteWriteV2 is remote write 2.0 (io.prometheus.write.v2.Request):
	// a symbols table, metadata per series, start (created) timestamps.
	RemoteWriteV2 = "io.prometheus.write.v2.Request"
)

// Headers of remote write 2.0
// (https://prometheus.io/docs/specs/remote_write_spec_2_0/).
const (
	rw2ContentType       = "application/x-protobuf;proto=" + RemoteWriteV2
	rw2Version           = "2.0.0"
	rw2SamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	rw2HistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	rw2ExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// validProtobufMessage rejects what is neither 1.0 nor 2.0; empty means 1.0.
func validProtobufMessage(m string) error {
	switch m {
	case "", RemoteWriteV1, RemoteWriteV2:
		return nil
	}
	return fmt.Errorf("%q: want %s (remote write 1.0) or %s (remote write 2.0)", m, RemoteWriteV1, RemoteWriteV2)
}

// ToWriteRequestV2 is ToWriteRequest for remote write 2.0: the same
// series, with every string in req.Symbols (through syms, which is reset),
// metadata on every series (with metadata), and the start timestamps of
// counters, histograms and summaries, which 1.0 cannot carry. req's and
// syms's memory is reused.
func ToWriteRequestV2(md pmetric.Metrics, req *writev2.Request, syms *writev2.SymbolsTable, metadata bool) {
	w := rw2Writer{req: req, syms: syms, metadata: metadata}
	w.convert(md)
}

// rw2Writer builds a remote write 2.0 request from the series of the
// conversion remote write 1.0 uses.
type rw2Writer struct {
	req      *writev2.Request
	syms     *writev2.SymbolsTable
	metadata bool
	conv     seriesConverter
	meta     writev2.Metadata // of the current family
	st       int64            // of the current series
	ts       *writev2.TimeSeries
	// sent counts the samples and histograms of the request, to compare
	// with what the receiver reports written.
	sent int
}

var _ seriesSink = (*rw2Writer)(nil)

func (w *rw2Writer) convert(md pmetric.Metrics) {
	w.syms.Reset()
	w.req.Timeseries = w.req.Timeseries[:0]
	w.sent = 0
	w.conv.convert(md, w)
	w.req.Symbols = w.syms.Symbols()
}

// family symbolizes help and unit once for all series of the family.
func (w *rw2Writer) family(f *family) {
	w.meta = writev2.Metadata{}
	if !w.metadata || f == nil {
		return
	}
	w.meta = writev2.Metadata{
		// The enums share their numbers: both follow the OpenMetrics types.
		Type:    writev2.Metadata_MetricType(f.typ),
		HelpRef: w.syms.Symbolize(f.help),
		UnitRef: w.syms.Symbolize(f.unit),
	}
}

// series appends a time series, reusing the memory of the one that held
// its place in an earlier request.
func (w *rw2Writer) series(ls []prompb.Label, st int64) {
	n := len(w.req.Timeseries)
	if n < cap(w.req.Timeseries) {
		w.req.Timeseries = w.req.Timeseries[:n+1]
		ts := &w.req.Timeseries[n]
		ts.LabelsRefs, ts.Samples, ts.Histograms, ts.Exemplars = ts.LabelsRefs[:0], ts.Samples[:0], ts.Histograms[:0], ts.Exemplars[:0]
	} else {
		w.req.Timeseries = append(w.req.Timeseries, writev2.TimeSeries{})
	}
	w.ts = &w.req.Timeseries[n]
	w.ts.LabelsRefs = w.symbolize(ls, w.ts.LabelsRefs)
	w.ts.Metadata = w.meta
	w.st = st
}

func (w *rw2Writer) symbolize(ls []prompb.Label, refs []uint32) []uint32 {
	for _, l := range ls {
		refs = append(refs, w.syms.Symbolize(l.Name), w.syms.Symbolize(l.Value))
	}
	return refs
}

func (w *rw2Writer) sample(v float64, t int64) {
	w.ts.Samples = append(w.ts.Samples, writev2.Sample{Value: v, Timestamp: t, StartTimestamp: w.st})
	w.sent++
}

func (w *rw2Writer) histogram(h prompb.Histogram) {
	w.ts.Histograms = append(w.ts.Histograms, histogramV2(h, w.st))
	w.sent++
}

func (w *rw2Writer) exemplar(e prompb.Exemplar) {
	w.ts.Exemplars = append(w.ts.Exemplars, writev2.Exemplar{
		LabelsRefs: w.symbolize(e.Labels, nil),
		Value:      e.Value,
		Timestamp:  e.Timestamp,
	})
}

// histogramV2 copies a 1.0 native histogram into its 2.0 message, which
// adds the start timestamp.
func histogramV2(h prompb.Histogram, st int64) writev2.Histogram {
	out := writev2.Histogram{
		Sum:            h.Sum,
		Schema:         h.Schema,
		ZeroThreshold:  h.ZeroThreshold,
		NegativeSpans:  spansV2(h.NegativeSpans),
		NegativeDeltas: h.NegativeDeltas,
		NegativeCounts: h.NegativeCounts,
		PositiveSpans:  spansV2(h.PositiveSpans),
		PositiveDeltas: h.PositiveDeltas,
		PositiveCounts: h.PositiveCounts,
		// The enums share their numbers.
		ResetHint:      writev2.Histogram_ResetHint(h.ResetHint),
		Timestamp:      h.Timestamp,
		CustomValues:   h.CustomValues,
		StartTimestamp: st,
	}
	switch c := h.Count.(type) {
	case *prompb.Histogram_CountInt:
		out.Count = &writev2.Histogram_CountInt{CountInt: c.CountInt}
	case *prompb.Histogram_CountFloat:
		out.Count = &writev2.Histogram_CountFloat{CountFloat: c.CountFloat}
	}
	switch c := h.ZeroCount.(type) {
	case *prompb.Histogram_ZeroCountInt:
		out.ZeroCount = &writev2.Histogram_ZeroCountInt{ZeroCountInt: c.ZeroCountInt}
	case *prompb.Histogram_ZeroCountFloat:
		out.ZeroCount = &writev2.Histogram_ZeroCountFloat{ZeroCountFloat: c.ZeroCountFloat}
	}
	return out
}

func spansV2(in []prompb.BucketSpan) []writev2.BucketSpan {
	if len(in) == 0 {
		return nil
	}
	out := make([]writev2.BucketSpan, len(in))
	for i, s := range in {
		out[i] = writev2.BucketSpan{Offset: s.Offset, Length: s.Length}
	}
	return out
}

// rw2Written reads the samples and histograms the receiver reports
// written; ok is false when it reports nothing (no header at all).
func rw2Written(h http.Header) (n int, ok bool) {
	for _, k := range []string{rw2SamplesWritten, rw2HistogramsWritten} {
		v := h.Get(k)
		if v == "" {
			continue
		}
		ok = true
		if i, err := strconv.Atoi(v); err == nil && i > 0 {
			n += i
		}
	}
	if h.Get(rw2ExemplarsWritten) != "" {
		ok = true
	}
	return n, ok
}

// errRW2Unsupported is how a receiver that does not accept remote write 2.0
// is reported: the batch is dropped, not retried, since every retry would
// be refused the same way.
func errRW2Unsupported(resp *http.Response, body []byte) error {
	return permanent(fmt.Errorf("receiver does not accept remote write 2.0 (%s): HTTP %s: %s; set protobuf_message (--remote-write.protobuf-message) to %s for it",
		RemoteWriteV2, resp.Status, truncate(body, 256), RemoteWriteV1), "http_"+strconv.Itoa(http.StatusUnsupportedMediaType))
}

// checkRW2Response interprets a remote write 2.0 response to a request of
// sent samples and histograms made of points data points.
//
//   - 415: the receiver speaks 1.0 only; dropped, not retried.
//   - 2xx with nothing reported written although something was sent: the
//     specification says to assume 415 (a 1.x receiver that does not check
//     the content type); Prometheus's own sender does the same.
//   - A 4xx that reports part written is a partial write: the rest is
//     counted dropped, in data points proportionally to the samples.
//   - Anything else as remote write 1.0 (429 and 5xx retried).
func checkRW2Response(resp *http.Response, body []byte, sent, points int) error {
	written, reported := rw2Written(resp.Header)
	switch {
	case resp.StatusCode == http.StatusUnsupportedMediaType:
		return errRW2Unsupported(resp, body)
	case resp.StatusCode/100 == 2:
		if sent > 0 && written == 0 {
			return errRW2Unsupported(resp, []byte("2xx without written samples reported (a 1.x receiver)"))
		}
		if written < sent {
			return rw2Partial(sent, written, points, resp, body)
		}
		return nil
	case resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests && reported && written > 0 && written < sent:
		return rw2Partial(sent, written, points, resp, body)
	}
	return classifyHTTP(resp, body)
}

func rw2Partial(sent, written, points int, resp *http.Response, body []byte) error {
	missing := sent - written
	dropped := min(max((points*missing+sent-1)/sent, 1), points)
	return partialSuccess(int64(dropped), fmt.Sprintf("receiver wrote %d of %d samples and histograms (HTTP %s: %s)", written, sent, resp.Status, truncate(body, 256)))
}
