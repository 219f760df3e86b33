package sink

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

func otlpBody(t *testing.T, ts time.Time, v float64) []byte {
	t.Helper()
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "job")
	rm.Resource().Attributes().PutStr("service.instance.id", "i1")
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("up")
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(ts))
	dp.SetDoubleValue(v)
	b, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdEncoded(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

func TestReceivers(t *testing.T) {
	now := time.Now().Truncate(time.Millisecond)
	rw := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "job", Value: "j"}},
		Samples: []prompb.Sample{{Timestamp: now.UnixMilli(), Value: 7}},
	}}}
	raw, err := rw.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	otlp := otlpBody(t, now, 1)
	for _, tc := range []struct {
		name, path, contentType string
		encoding                string
		body                    []byte
		wantStatus              int
		wantSeries              Series
	}{
		{"otlp proto", "/v1/metrics", "application/x-protobuf", "", otlp, http.StatusOK, `up{service.instance.id="i1",service.name="job"}`},
		{"otlp gzip", "/v1/metrics", "application/x-protobuf", "gzip", gzipped(t, otlp), http.StatusOK, `up{service.instance.id="i1",service.name="job"}`},
		{"otlp zstd", "/v1/metrics", "application/x-protobuf", "zstd", zstdEncoded(t, otlp), http.StatusOK, `up{service.instance.id="i1",service.name="job"}`},
		{"otlp unknown encoding", "/v1/metrics", "application/x-protobuf", "br", otlp, http.StatusBadRequest, ""},
		{"remote write", "/api/v1/write", "application/x-protobuf", "", snappy.Encode(nil, raw), http.StatusNoContent, `x{job="j"}`},
		{"otlp garbage", "/v1/metrics", "application/x-protobuf", "", []byte("\xff\xff garbage"), http.StatusBadRequest, ""},
		{"remote write not snappy", "/api/v1/write", "application/x-protobuf", "", []byte("plain"), http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(0)
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			req, err := http.NewRequest(http.MethodPost, srv.URL+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.contentType)
			if tc.encoding != "" {
				req.Header.Set("Content-Encoding", tc.encoding)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantSeries == "" {
				if n := len(s.Series()); n != 0 {
					t.Fatalf("%d series recorded from a bad request", n)
				}
				return
			}
			got := s.Samples(tc.wantSeries)
			if len(got) != 1 || !got[0].T.Equal(now) {
				t.Fatalf("samples of %s = %v (have %v)", tc.wantSeries, got, s.Series())
			}
		})
	}
}

func TestMaxPerSeries(t *testing.T) {
	s := New(3)
	base := time.Unix(1000, 0)
	for i := 0; i < 5; i++ {
		md := pmetric.NewMetrics()
		m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		m.SetName("g")
		dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(base.Add(time.Duration(i) * time.Second)))
		dp.SetDoubleValue(float64(i))
		_ = s.ConsumeMetrics(t.Context(), md)
	}
	got := s.Samples("g{}")
	if len(got) != 3 || got[0].V != 2 || got[2].V != 4 {
		t.Fatalf("kept %v, want the last 3", got)
	}
}

func TestSamplesAPI(t *testing.T) {
	s := New(0)
	now := time.Now().Truncate(time.Millisecond)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/metrics", "application/x-protobuf", bytes.NewReader(otlpBody(t, now, 1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get(srv.URL + "/api/v1/samples?match=up")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string][][3]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	rows := got[`up{service.instance.id="i1",service.name="job"}`]
	if len(rows) != 1 || int64(rows[0][0].(float64)) != now.UnixMilli() || rows[0][1].(float64) != 1 {
		t.Fatalf("samples = %v", got)
	}
}
