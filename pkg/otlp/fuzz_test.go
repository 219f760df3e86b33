package otlp

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// call is one recorded Append.
type call struct {
	ls     labels.Labels
	st, t  int64
	v      float64
	h      *histogram.Histogram
	fh     *histogram.FloatHistogram
	opts   storage.AppendV2Options
	family string
}

// parseBody turns an exposition into the Append calls a scrape loop makes
// for it: the series with the target's job and instance, metadata and
// family name from the TYPE/HELP/UNIT lines before them, start timestamps
// and exemplars. It is a simplified scrape loop (no cache, no relabelling)
// for fuzzing and benchmarks; golden tests use the real one.
func parseBody(b []byte, contentType string, t int64) ([]call, error) {
	return parseBodyOpts(b, contentType, t, textparse.ParserOptions{})
}

// parseBodyOpts is parseBody with parser options (start timestamps are
// always parsed).
func parseBodyOpts(b []byte, contentType string, t int64, po textparse.ParserOptions) ([]call, error) {
	po.OpenMetricsSkipSTSeries = true
	po.FallbackContentType = "text/plain"
	p, err := textparse.New(b, contentType, labels.NewSymbolTable(), po)
	if p == nil {
		return nil, err
	}
	var (
		calls  []call
		meta   metadata.Metadata
		family string
		lb     = labels.NewBuilder(labels.EmptyLabels())
	)
	for {
		et, err := p.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return calls, nil
			}
			return calls, err
		}
		switch et {
		case textparse.EntryType:
			name, typ := p.Type()
			if string(name) != family {
				meta = metadata.Metadata{}
			}
			family, meta.Type = string(name), typ
			continue
		case textparse.EntryHelp:
			name, help := p.Help()
			if string(name) != family {
				meta = metadata.Metadata{}
			}
			family, meta.Help = string(name), string(help)
			continue
		case textparse.EntryUnit:
			name, unit := p.Unit()
			if string(name) != family {
				meta = metadata.Metadata{}
			}
			family, meta.Unit = string(name), string(unit)
			continue
		case textparse.EntryComment, textparse.EntryInvalid:
			continue
		}
		c := call{t: t}
		var ts *int64
		if et == textparse.EntryHistogram {
			_, ts, c.h, c.fh = p.Histogram()
		} else {
			_, ts, c.v = p.Series()
		}
		if ts != nil {
			c.t = *ts
		}
		var ls labels.Labels
		p.Labels(&ls)
		lb.Reset(ls)
		lb.Set(model.JobLabel, "job")
		lb.Set(model.InstanceLabel, "host:9100")
		c.ls = lb.Labels()
		c.st = p.StartTimestamp()
		var e exemplar.Exemplar
		for p.Exemplar(&e) {
			if !e.HasTs {
				e.Ts = c.t
			}
			c.opts.Exemplars = append(c.opts.Exemplars, e)
			e = exemplar.Exemplar{}
		}
		if family != "" {
			c.opts.MetricFamilyName = family
			c.opts.Metadata = meta
		}
		calls = append(calls, c)
	}
}

// appendCalls replays calls into one appender and commits.
func appendCalls(app storage.AppendableV2, calls []call) error {
	a := app.AppenderV2(context.Background())
	for i := range calls {
		c := &calls[i]
		if _, err := a.Append(0, c.ls, c.st, c.t, c.v, c.h, c.fh, c.opts); err != nil {
			_ = a.Rollback()
			return err
		}
	}
	return a.Commit()
}

var contentTypes = []string{
	"text/plain; version=0.0.4",
	"application/openmetrics-text; version=1.0.0",
}

func FuzzConvert(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txt")
	oms, _ := filepath.Glob("testdata/*.om")
	for _, p := range append(files, oms...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		ct := uint8(0)
		if filepath.Ext(p) == ".om" {
			ct = 1
		}
		f.Add(b, ct)
	}
	f.Add([]byte("a 1\na 2\n"), uint8(0))
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"NaN\"} 1\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"1\"} 2\nh_count 1\n"), uint8(0))
	f.Add([]byte("# TYPE s summary\ns{quantile=\"x\"} 1\ns_count -5\n"), uint8(0))

	f.Fuzz(func(t *testing.T, body []byte, ct uint8) {
		calls, _ := parseBody(body, contentTypes[int(ct)%len(contentTypes)], 1_700_000_000_000)
		var got []pmetric.Metrics
		app := NewAppendable(ConsumerFunc(func(_ context.Context, md pmetric.Metrics) error {
			got = append(got, md)
			return nil
		}), Options{}, nil, nil)
		// Twice, so the second scrape runs through the start-time state.
		for range 2 {
			if err := appendCalls(app, calls); err != nil && !errors.Is(err, ErrNoMetricName) {
				t.Fatalf("append: %v", err)
			}
		}
		for _, md := range got {
			if err := validate(md); err != nil {
				t.Fatalf("invalid pdata: %v", err)
			}
		}
	})
}

// validate checks what OTLP requires of converted metrics and that they
// survive a protobuf round trip.
func validate(md pmetric.Metrics) error {
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		sms := md.ResourceMetrics().At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if err := validateMetric(ms.At(k)); err != nil {
					return err
				}
			}
		}
	}
	raw, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
	if err != nil {
		return err
	}
	back, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(raw)
	if err != nil {
		return err
	}
	if back.DataPointCount() != md.DataPointCount() {
		return errors.New("round trip lost points")
	}
	return nil
}

func validateMetric(m pmetric.Metric) error {
	if m.Name() == "" {
		return errors.New("metric without name")
	}
	switch m.Type() {
	case pmetric.MetricTypeEmpty:
		return errors.New(m.Name() + ": no data")
	case pmetric.MetricTypeHistogram:
		dps := m.Histogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			if dp.Flags().NoRecordedValue() {
				continue
			}
			bounds := dp.ExplicitBounds().AsRaw()
			if n := dp.BucketCounts().Len(); n != 0 && n != len(bounds)+1 {
				return errors.New(m.Name() + ": bucket counts do not match bounds")
			}
			var sum uint64
			for _, c := range dp.BucketCounts().AsRaw() {
				sum += c
			}
			if dp.BucketCounts().Len() > 0 && sum != dp.Count() {
				return errors.New(m.Name() + ": bucket counts do not add up to count")
			}
			for b := range bounds {
				if math.IsNaN(bounds[b]) || math.IsInf(bounds[b], 0) || b > 0 && bounds[b] <= bounds[b-1] {
					return errors.New(m.Name() + ": bounds not strictly increasing finite")
				}
			}
		}
	case pmetric.MetricTypeExponentialHistogram:
		dps := m.ExponentialHistogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			if s := dps.At(i).Scale(); s < -10 || s > 20 {
				return errors.New(m.Name() + ": scale out of range")
			}
		}
	}
	return nil
}
