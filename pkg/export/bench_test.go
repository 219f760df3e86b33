package export

import (
	"context"
	"fmt"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// benchScrape is a converted node-exporter-like scrape with the shape of
// pkg/otlp's benchmark exposition: 1000 counter and 1000 gauge points, 100
// histograms of 12 buckets and 50 summaries of 3 quantiles, 3650 Prometheus
// samples.
func benchScrape() pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "node")
	rm.Resource().Attributes().PutStr("service.instance.id", "host:9100")
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(defaultScopeName)
	ts := pcommon.Timestamp(1_700_000_000_000 * 1e6)
	for f := range 50 {
		m := sm.Metrics().AppendEmpty()
		m.SetName(fmt.Sprintf("node_counter_%d_total", f))
		s := m.SetEmptySum()
		s.SetIsMonotonic(true)
		s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		for i := range 20 {
			dp := s.DataPoints().AppendEmpty()
			dp.SetStartTimestamp(ts)
			dp.SetTimestamp(ts)
			dp.SetDoubleValue(float64(1000*f + i))
			dp.Attributes().PutStr("cpu", fmt.Sprint(i))
			dp.Attributes().PutStr("mode", "user")
		}
		g := sm.Metrics().AppendEmpty()
		g.SetName(fmt.Sprintf("node_gauge_%d_bytes", f))
		gauge := g.SetEmptyGauge()
		for i := range 20 {
			dp := gauge.DataPoints().AppendEmpty()
			dp.SetTimestamp(ts)
			dp.SetDoubleValue(float64(f*i) * 1.5)
			dp.Attributes().PutStr("device", fmt.Sprintf("sd%d", i))
			dp.Attributes().PutStr("fstype", "ext4")
		}
	}
	for f := range 10 {
		m := sm.Metrics().AppendEmpty()
		m.SetName(fmt.Sprintf("http_%d_duration_seconds", f))
		h := m.SetEmptyHistogram()
		h.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		for i := range 10 {
			dp := h.DataPoints().AppendEmpty()
			dp.SetStartTimestamp(ts)
			dp.SetTimestamp(ts)
			dp.ExplicitBounds().FromRaw([]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10})
			dp.BucketCounts().FromRaw([]uint64{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10})
			dp.SetCount(120)
			dp.SetSum(42.5)
			dp.Attributes().PutStr("handler", fmt.Sprintf("/h%d", i))
			dp.Attributes().PutStr("method", "GET")
		}
	}
	for f := range 5 {
		m := sm.Metrics().AppendEmpty()
		m.SetName(fmt.Sprintf("rpc_%d_seconds", f))
		s := m.SetEmptySummary()
		for i := range 10 {
			dp := s.DataPoints().AppendEmpty()
			dp.SetStartTimestamp(ts)
			dp.SetTimestamp(ts)
			for _, q := range []float64{0.5, 0.9, 0.99} {
				qv := dp.QuantileValues().AppendEmpty()
				qv.SetQuantile(q)
				qv.SetValue(0.1)
			}
			dp.SetCount(30)
			dp.SetSum(12)
			dp.Attributes().PutStr("service", fmt.Sprintf("s%d", i))
		}
	}
	return md
}

const benchSamples = 3650

// BenchmarkEncodeRemoteWrite measures turning one converted scrape back
// into Prometheus series, protobuf and snappy, as the remote write
// exporter does per request, for remote write 1.0 and 2.0 in the same run.
func BenchmarkEncodeRemoteWrite(b *testing.B) {
	for _, msg := range []string{RemoteWriteV1, RemoteWriteV2} {
		b.Run(msg, func(b *testing.B) {
			md := benchScrape()
			c := &remoteWriteClient{metadata: true, v2: msg == RemoteWriteV2}
			var buf rwBuffers
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.encode(md, &buf); err != nil {
					b.Fatal(err)
				}
				buf.snappy = snappy.Encode(buf.snappy[:cap(buf.snappy)], buf.raw)
			}
			var samples int
			if c.v2 {
				samples = buf.rw2.sent
			} else {
				samples = countSamples(&buf.req)
			}
			if samples != benchSamples {
				b.Fatalf("%d samples, want %d", samples, benchSamples)
			}
			b.ReportMetric(float64(b.N*benchSamples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(len(buf.snappy))/benchSamples, "bytes/sample")
		})
	}
}

func countSamples(req *prompb.WriteRequest) int {
	n := 0
	for _, ts := range req.Timeseries {
		n += len(ts.Samples)
	}
	return n
}

// BenchmarkEncodeOTLPHTTP measures the OTLP/HTTP request body: protobuf,
// then each compression (--otlp.compression) in the same run.
func BenchmarkEncodeOTLPHTTP(b *testing.B) {
	md := benchScrape()
	for _, compression := range []string{CompressionGzip, CompressionZstd} {
		b.Run(compression, func(b *testing.B) {
			c := &otlpHTTPClient{compression: compression}
			b.ReportAllocs()
			var size int
			for b.Loop() {
				raw, err := pmetricotlpMarshal(md)
				if err != nil {
					b.Fatal(err)
				}
				body, err := c.zw.compress(compression, [][]byte{raw})
				if err != nil {
					b.Fatal(err)
				}
				size = body.Len()
				c.zw.put(body)
			}
			b.ReportMetric(float64(b.N*benchSamples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(size)/benchSamples, "bytes/sample")
		})
	}
}

// BenchmarkCompress measures the compression of an encoded scrape alone.
func BenchmarkCompress(b *testing.B) {
	raw, err := pmetricotlpMarshal(benchScrape())
	if err != nil {
		b.Fatal(err)
	}
	for _, compression := range []string{CompressionGzip, CompressionZstd} {
		b.Run(compression, func(b *testing.B) {
			var c bodyCompressor
			var size int
			for b.Loop() {
				body, err := c.compress(compression, [][]byte{raw})
				if err != nil {
					b.Fatal(err)
				}
				size = body.Len()
				c.put(body)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchSamples), "ns/sample")
			b.ReportMetric(float64(size)/benchSamples, "bytes/sample")
		})
	}
}

// BenchmarkFanout measures handing one scrape to three exporters whose
// queues take it (two copies).
func BenchmarkFanout(b *testing.B) {
	md := benchScrape()
	sinks := []Exporter{&failingExporter{}, &failingExporter{}, &failingExporter{}}
	set := NewFanout(sinks...)
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range sinks {
			s.(*failingExporter).got = s.(*failingExporter).got[:0]
		}
		if err := set.ConsumeMetrics(context.Background(), md); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchSamples)/b.Elapsed().Seconds(), "samples/s")
}

func pmetricotlpMarshal(md pmetric.Metrics) ([]byte, error) {
	return pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
}
