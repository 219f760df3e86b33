package otlp

import (
	"encoding/binary"
	"math"

	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the OTLP metrics protobuf
// (opentelemetry/proto/metrics/v1/metrics.proto) that the encoder writes.
// Every one is below 16, so each tag is one byte.
const (
	fieldResourceMetrics = 1 // ExportMetricsServiceRequest, MetricsData

	fieldRMResource     = 1 // ResourceMetrics
	fieldRMScopeMetrics = 2

	fieldResourceAttributes = 1 // Resource

	fieldSMScope   = 1 // ScopeMetrics
	fieldSMMetrics = 2

	fieldScopeName    = 1 // InstrumentationScope
	fieldScopeVersion = 2

	fieldMetricName        = 1 // Metric
	fieldMetricDescription = 2
	fieldMetricUnit        = 3
	fieldMetricGauge       = 5
	fieldMetricSum         = 7
	fieldMetricHistogram   = 9
	fieldMetricSummary     = 11
	fieldMetricMetadata    = 12

	fieldDataPoints  = 1 // Gauge, Sum, Histogram, Summary
	fieldTemporality = 2 // Sum, Histogram
	fieldMonotonic   = 3 // Sum

	fieldStart = 2 // NumberDataPoint, HistogramDataPoint, SummaryDataPoint
	fieldTime  = 3

	fieldNumberDouble = 4 // NumberDataPoint
	fieldNumberAttrs  = 7
	fieldNumberFlags  = 8

	fieldHistCount  = 4 // HistogramDataPoint
	fieldHistSum    = 5
	fieldHistCounts = 6
	fieldHistBounds = 7
	fieldHistAttrs  = 9
	fieldHistFlags  = 10

	fieldSummaryCount     = 4 // SummaryDataPoint
	fieldSummarySum       = 5
	fieldSummaryQuantiles = 6
	fieldSummaryAttrs     = 7
	fieldSummaryFlags     = 8

	fieldQuantile      = 1 // ValueAtQuantile
	fieldQuantileValue = 2

	fieldKVKey   = 1 // KeyValue
	fieldKVValue = 2

	fieldAnyString = 1 // AnyValue
	fieldAnyBool   = 2
	fieldAnyInt    = 3
	fieldAnyDouble = 4
	fieldAnyArray  = 5
	fieldAnyKVList = 6
	fieldAnyBytes  = 7

	fieldListValues = 1 // ArrayValue, KeyValueList
)

// Wire types.
const (
	wireVarint = 0
	wireI64    = 1
	wireLen    = 2
)

// Tags of the fields written on the per-sample path.
const (
	tagDataPoint = fieldDataPoints<<3 | wireLen
	tagStart     = fieldStart<<3 | wireI64
	tagTime      = fieldTime<<3 | wireI64
	tagDouble    = fieldNumberDouble<<3 | wireI64
	tagFlags     = fieldNumberFlags<<3 | wireVarint
	// startSlot is the size of a start timestamp field: tag and fixed64. The
	// encoder reserves it in every cumulative point and fills it in Commit.
	startSlot = 9
)

// noRecordedValue is DataPointFlags.NoRecordedValue.
const noRecordedValue = 1

func appendTag(b []byte, field, wire int) []byte {
	return append(b, byte(field<<3|wire))
}

// appendLenField appends a length-delimited field: a message, string or
// bytes.
func appendLenField[P []byte | string](b []byte, field int, payload P) []byte {
	b = appendTag(b, field, wireLen)
	b = protowire.AppendVarint(b, uint64(len(payload)))
	return append(b, payload...)
}

func appendFixed64Field(b []byte, field int, v uint64) []byte {
	b = appendTag(b, field, wireI64)
	return binary.LittleEndian.AppendUint64(b, v)
}

// lenFieldSize is the size of a length-delimited field with an n-byte
// payload.
func lenFieldSize(n int) int {
	return 1 + protowire.SizeVarint(uint64(n)) + n
}

// appendStrKeyValue appends a KeyValue with a string value as field.
func appendStrKeyValue(b []byte, field int, key, value string) []byte {
	anyLen := lenFieldSize(len(value))
	kvLen := lenFieldSize(len(key)) + lenFieldSize(anyLen)
	b = appendTag(b, field, wireLen)
	b = protowire.AppendVarint(b, uint64(kvLen))
	b = appendLenField(b, fieldKVKey, key)
	b = appendTag(b, fieldKVValue, wireLen)
	b = protowire.AppendVarint(b, uint64(anyLen))
	return appendLenField(b, fieldAnyString, value)
}

// appendLabelAttrs appends point attributes (string KeyValues) as field,
// without the label drop ("" drops nothing: no label has an empty name).
func appendLabelAttrs(b []byte, field int, ls []labels.Label, drop string) []byte {
	for _, l := range ls {
		if l.Name != drop {
			b = appendStrKeyValue(b, field, l.Name, l.Value)
		}
	}
	return b
}

// appendMap appends the entries of m as KeyValue fields.
func appendMap(b []byte, field int, m pcommon.Map) []byte {
	var kv []byte
	m.Range(func(k string, v pcommon.Value) bool {
		kv = appendLenField(kv[:0], fieldKVKey, k)
		kv = appendLenField(kv, fieldKVValue, appendAnyValue(nil, v))
		b = appendLenField(b, field, kv)
		return true
	})
	return b
}

// appendAnyValue appends the fields of an AnyValue message. It is used for
// resources only, once per target, so it favours brevity over speed.
func appendAnyValue(b []byte, v pcommon.Value) []byte {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		b = appendLenField(b, fieldAnyString, v.Str())
	case pcommon.ValueTypeBool:
		b = appendTag(b, fieldAnyBool, wireVarint)
		b = protowire.AppendVarint(b, protowire.EncodeBool(v.Bool()))
	case pcommon.ValueTypeInt:
		b = appendTag(b, fieldAnyInt, wireVarint)
		b = protowire.AppendVarint(b, uint64(v.Int()))
	case pcommon.ValueTypeDouble:
		b = appendFixed64Field(b, fieldAnyDouble, math.Float64bits(v.Double()))
	case pcommon.ValueTypeBytes:
		b = appendLenField(b, fieldAnyBytes, v.Bytes().AsRaw())
	case pcommon.ValueTypeSlice:
		var arr []byte
		s := v.Slice()
		for i := 0; i < s.Len(); i++ {
			arr = appendLenField(arr, fieldListValues, appendAnyValue(nil, s.At(i)))
		}
		b = appendLenField(b, fieldAnyArray, arr)
	case pcommon.ValueTypeMap:
		b = appendLenField(b, fieldAnyKVList, appendMap(nil, fieldListValues, v.Map()))
	}
	return b
}

// encodeResource returns the Resource message of r.
func encodeResource(r pcommon.Resource) []byte {
	return appendMap(nil, fieldResourceAttributes, r.Attributes())
}

// encodeScope returns the InstrumentationScope message of the default scope.
func encodeScope(name, version string) []byte {
	var b []byte
	if name != "" {
		b = appendLenField(b, fieldScopeName, name)
	}
	if version != "" {
		b = appendLenField(b, fieldScopeVersion, version)
	}
	return b
}

func putFixed64(b []byte, v uint64) {
	binary.LittleEndian.PutUint64(b, v)
}
