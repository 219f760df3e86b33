package otlp

import (
	"encoding/hex"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Exemplar labels that carry the trace context (OpenMetrics convention, as
// the OpenTelemetry SDKs' Prometheus exporters write them).
const (
	traceIDLabel = "trace_id"
	spanIDLabel  = "span_id"
)

// putExemplars appends exemplars to dst. trace_id and span_id labels that
// are valid hex of the right length become the exemplar's trace and span
// IDs; every other label (and an ID that does not parse) is a filtered
// attribute, so nothing is lost.
func putExemplars(dst pmetric.ExemplarSlice, es []exemplar.Exemplar) {
	dst.EnsureCapacity(dst.Len() + len(es))
	for i := range es {
		e := &es[i]
		out := dst.AppendEmpty()
		out.SetTimestamp(msToTimestamp(e.Ts))
		out.SetDoubleValue(e.Value)
		attrs := out.FilteredAttributes()
		e.Labels.Range(func(l labels.Label) {
			switch l.Name {
			case traceIDLabel:
				var id pcommon.TraceID
				if len(l.Value) == 2*len(id) {
					if _, err := hex.Decode(id[:], []byte(l.Value)); err == nil {
						out.SetTraceID(id)
						return
					}
				}
			case spanIDLabel:
				var id pcommon.SpanID
				if len(l.Value) == 2*len(id) {
					if _, err := hex.Decode(id[:], []byte(l.Value)); err == nil {
						out.SetSpanID(id)
						return
					}
				}
			}
			attrs.PutStr(l.Name, l.Value)
		})
	}
}

// msToTimestamp converts Prometheus milliseconds to OTLP nanoseconds.
func msToTimestamp(ms int64) pcommon.Timestamp {
	return pcommon.Timestamp(ms * 1e6)
}
