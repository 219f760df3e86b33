package otlp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// encRecorder is an EncodedConsumer that keeps every scrape as what goes
// on the wire: the encoded bytes, or the pdata marshalled (a scrape the
// encoder handed to the pdata builder arrives through ConsumeMetrics). Its
// recorder has the scrapes without telling them apart.
type encRecorder struct {
	recorder
	encoded []bool // per scrape: it came encoded (guarded by recorder.mu)
}

func (r *encRecorder) AcceptsEncoded() bool { return true }

func (r *encRecorder) ConsumeEncoded(_ context.Context, req []byte, points int) error {
	er := pmetricotlp.NewExportRequest()
	if err := er.UnmarshalProto(req); err != nil {
		return fmt.Errorf("decode encoded scrape: %w", err)
	}
	md := er.Metrics()
	if got := md.DataPointCount(); got != points {
		return fmt.Errorf("encoded scrape says %d points, has %d", points, got)
	}
	r.add(md, true)
	return nil
}

func (r *encRecorder) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	r.add(md, false)
	return nil
}

func (r *encRecorder) add(md pmetric.Metrics, encoded bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, md)
	r.encoded = append(r.encoded, encoded)
}

func (r *encRecorder) all() ([]pmetric.Metrics, []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pmetric.Metrics(nil), r.got...), append([]bool(nil), r.encoded...)
}

// requireSameWire fails unless want and got are the same on the wire:
// pdata's marshalling of both is equal (so NaNs compare by their bits, and
// what marshalling drops, like the sign of a zero summary sum, does not
// count).
func requireSameWire(t *testing.T, want, got pmetric.Metrics, msg string) {
	t.Helper()
	w, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(want)
	require.NoError(t, err)
	back, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(w)
	require.NoError(t, err)
	w, err = (&pmetric.ProtoMarshaler{}).MarshalMetrics(back)
	require.NoError(t, err)
	g, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(got)
	require.NoError(t, err)
	if !bytes.Equal(w, g) {
		wj, _ := (&pmetric.JSONMarshaler{}).MarshalMetrics(back)
		gj, _ := (&pmetric.JSONMarshaler{}).MarshalMetrics(got)
		require.Equal(t, string(wj), string(gj), msg)
		require.Fail(t, "wire encodings differ", msg)
	}
}

// loopSim plays the part of the scrape loop's cache: it passes back the
// reference an appender returned for a series, skips a series repeated in
// one scrape, and appends staleness markers (without metadata, as
// Prometheus does) for the series of the last committed scrape that are
// gone.
type loopSim struct {
	refs map[string]storage.SeriesRef
	prev []labels.Labels // in order, so that both paths see the same
}

func newLoopSim() *loopSim {
	return &loopSim{refs: map[string]storage.SeriesRef{}}
}

func (l *loopSim) scrape(ctx context.Context, app storage.AppendableV2, calls []call, t int64, rollback bool) error {
	a := app.AppenderV2(ctx)
	cur := map[string]labels.Labels{}
	var order []labels.Labels
	for i := range calls {
		c := &calls[i]
		k := c.ls.String()
		if _, dup := cur[k]; dup {
			continue
		}
		ref, err := a.Append(l.refs[k], c.ls, c.st, c.t, c.v, c.h, c.fh, c.opts)
		if errors.Is(err, ErrNoMetricName) {
			continue
		}
		if err != nil {
			_ = a.Rollback()
			return err
		}
		l.refs[k] = ref
		cur[k] = c.ls
		order = append(order, c.ls)
	}
	for _, ls := range l.prev {
		k := ls.String()
		if _, ok := cur[k]; ok {
			continue
		}
		ref, err := a.Append(l.refs[k], ls, 0, t, math.Float64frombits(value.StaleNaN), nil, nil, storage.AOptions{RejectOutOfOrder: true})
		if err != nil {
			_ = a.Rollback()
			return err
		}
		l.refs[k] = ref
	}
	if rollback {
		return a.Rollback()
	}
	l.prev = order
	return a.Commit()
}

// parityInput is an exposition run through both paths.
type parityInput struct {
	name, contentType string
	body              []byte
	po                textparse.ParserOptions
	mustEncode        bool // the encoder handles it without the pdata builder
}

func parityInputs(t *testing.T) []parityInput {
	var in []parityInput
	for _, c := range goldenCases {
		pi := parityInput{name: c.file, contentType: c.contentType, body: body(t, c.file)}
		pi.po.ConvertClassicHistogramsToNHCB = strings.Contains(c.config, "nhcb")
		// histogram_summary.txt has a summary without _count: pdata builder.
		pi.mustEncode = c.file == "counter_gauge.txt"
		in = append(in, pi)
	}
	in = append(in, parityInput{name: "bench", contentType: "text/plain; version=0.0.4", body: benchExposition(), mustEncode: true})
	for n := 1; n <= 4; n++ {
		in = append(in, parityInput{name: fmt.Sprintf("exposition-%d", n), contentType: "text/plain; version=0.0.4", body: []byte(exposition(n)), mustEncode: true})
	}
	seeds := []string{"a 1\na 2\n", "# TYPE h histogram\nh_bucket{le=\"NaN\"} 1\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"1\"} 2\nh_count 1\n", "# TYPE s summary\ns{quantile=\"x\"} 1\ns_count -5\n"}
	corpus, err := filepath.Glob("testdata/fuzz/FuzzConvert/*")
	require.NoError(t, err)
	for _, p := range corpus {
		raw, err := os.ReadFile(p)
		require.NoError(t, err)
		lines := strings.Split(string(raw), "\n")
		require.GreaterOrEqual(t, len(lines), 3, p)
		b, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		require.NoError(t, err, p)
		ct, err := fuzzByte(lines[2])
		require.NoError(t, err, p)
		in = append(in, parityInput{name: filepath.Base(p), contentType: contentTypes[ct%len(contentTypes)], body: []byte(b)})
	}
	for i, s := range seeds {
		in = append(in, parityInput{name: fmt.Sprintf("seed-%d", i), contentType: contentTypes[0], body: []byte(s)})
	}
	return in
}

// fuzzByte reads a byte argument of a fuzz corpus file: uint8(N) or
// byte('c').
func fuzzByte(line string) (int, error) {
	if v, ok := strings.CutPrefix(line, "uint8("); ok {
		return strconv.Atoi(strings.TrimSuffix(v, ")"))
	}
	v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "byte("), ")"))
	if err != nil || len(v) != 1 {
		return 0, fmt.Errorf("fuzz byte %q: %w", line, err)
	}
	return int(v[0]), nil
}

// paritySteps are consecutive scrapes of one exposition: values that grow,
// fall (counter resets, native histograms with the reset hint), a
// rolled-back scrape, series that disappear (staleness markers) and come
// back, an empty scrape (everything stale).
var paritySteps = []struct {
	name     string
	mutate   func([]call) []call
	rollback bool
	// whole: every series or none is there, so an exposition the encoder
	// handles is encoded (with some series gone a summary may lack its
	// _count and go to the pdata builder).
	whole bool
}{
	{name: "first", mutate: func(c []call) []call { return c }, whole: true},
	{name: "grow", mutate: scaleCalls(2, 1, false), whole: true},
	{name: "reset", mutate: scaleCalls(0.25, 0, true), whole: true},
	{name: "rolled back", mutate: scaleCalls(3, 0, false), rollback: true},
	{name: "grow again", mutate: scaleCalls(1, 5, false), whole: true},
	{name: "some gone", mutate: func(c []call) []call {
		var out []call
		for i := range c {
			if i%3 != 1 {
				out = append(out, c[i])
			}
		}
		return out
	}},
	{name: "back", mutate: func(c []call) []call { return c }, whole: true},
	{name: "empty", mutate: func([]call) []call { return nil }, whole: true},
	{name: "after empty", mutate: func(c []call) []call { return c }, whole: true},
}

func scaleCalls(f, d float64, reset bool) func([]call) []call {
	return func(calls []call) []call {
		out := make([]call, len(calls))
		for i, c := range calls {
			if !value.IsStaleNaN(c.v) {
				c.v = c.v*f + d
			}
			if reset && c.h != nil {
				c.h = c.h.Copy()
				c.h.CounterResetHint = histogram.CounterReset
			}
			if reset && c.fh != nil {
				c.fh = c.fh.Copy()
				c.fh.CounterResetHint = histogram.CounterReset
			}
			out[i] = c
		}
		return out
	}
}

// TestEncodedParity runs every golden input, the fuzz corpus and the
// benchmark exposition through a sequence of scrapes into both paths, with
// and without a target in the context, and requires the same metrics on
// the wire after every scrape.
func TestEncodedParity(t *testing.T) {
	for _, in := range parityInputs(t) {
		for _, withTarget := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/target=%v", in.name, withTarget), func(t *testing.T) {
				enc, rec := &encRecorder{}, &recorder{}
				fast := NewAppendable(enc, Options{ScopeVersion: "test"}, nil, nil)
				slow := NewAppendable(rec, Options{ScopeVersion: "test"}, nil, nil)
				require.NotNil(t, fast.enc)
				require.Nil(t, slow.enc)
				ctx := context.Background()
				if withTarget {
					ctx = scrape.ContextWithTarget(ctx, testTarget())
				}
				fastLoop, slowLoop := newLoopSim(), newLoopSim()
				var wantEncoded []bool
				// Small expositions go round the steps often enough for the
				// series table to sweep (every 16 scrapes, after 32).
				rounds := 1
				if len(in.body) < 4096 {
					rounds = 6
				}
				for i := range rounds * len(paritySteps) {
					step := paritySteps[i%len(paritySteps)]
					ts := int64(1_700_000_000_000 + 15_000*i)
					calls, _ := parseBodyOpts(in.body, in.contentType, ts, in.po)
					calls = step.mutate(calls)
					errF := fastLoop.scrape(ctx, fast, calls, ts, step.rollback)
					errS := slowLoop.scrape(ctx, slow, calls, ts, step.rollback)
					require.Equal(t, errS, errF, step.name)
					if !step.rollback {
						wantEncoded = append(wantEncoded, step.whole)
					}
				}
				want := rec.all()
				got, encoded := enc.all()
				require.Len(t, got, len(want))
				for i := range want {
					requireSameWire(t, want[i], got[i], fmt.Sprintf("scrape %d", i))
				}
				if in.mustEncode && withTarget {
					require.Len(t, encoded, len(wantEncoded))
					for i, whole := range wantEncoded {
						if whole {
							require.True(t, encoded[i], "scrape %d encoded", i)
						}
					}
				}
			})
		}
	}
}

// teeAppendable appends every sample to two Appendables: the first gets the
// scrape loop's references, the second none.
type teeAppendable struct{ a, b storage.AppendableV2 }

func (t teeAppendable) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return &teeAppender{a: t.a.AppenderV2(ctx), b: t.b.AppenderV2(ctx)}
}

type teeAppender struct{ a, b storage.AppenderV2 }

func (t *teeAppender) Append(ref storage.SeriesRef, ls labels.Labels, st, ts int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	r, err := t.a.Append(ref, ls, st, ts, v, h, fh, opts)
	_, errB := t.b.Append(0, ls, st, ts, v, h, fh, opts)
	return r, errors.Join(err, errB)
}

func (t *teeAppender) Commit() error   { return errors.Join(t.a.Commit(), t.b.Commit()) }
func (t *teeAppender) Rollback() error { return errors.Join(t.a.Rollback(), t.b.Rollback()) }

// TestEncodedParityScrapeManager scrapes the golden inputs with a real
// scrape manager (report series, target resource, the scrape cache's
// references) into both paths and compares the first scrapes of each.
func TestEncodedParityScrapeManager(t *testing.T) {
	cfg, tsets, _ := goldenScrape(t, "50ms", "45ms")
	enc, rec := &encRecorder{}, &recorder{}
	fast := NewAppendable(enc, Options{ScopeVersion: "test"}, nil, nil)
	slow := NewAppendable(rec, Options{ScopeVersion: "test"}, nil, nil)
	runManagerConfig(t, teeAppendable{a: fast, b: slow}, cfg, tsets)

	const scrapes = 3
	byJob := func(mds []pmetric.Metrics) map[string][]pmetric.Metrics {
		out := map[string][]pmetric.Metrics{}
		for _, md := range mds {
			v, _ := md.ResourceMetrics().At(0).Resource().Attributes().Get("service.name")
			out[v.Str()] = append(out[v.Str()], md)
		}
		return out
	}
	require.Eventually(t, func() bool {
		got, _ := enc.all()
		want := byJob(rec.all())
		have := byJob(got)
		for _, c := range goldenCases {
			if len(want[c.file]) < scrapes || len(have[c.file]) < scrapes {
				return false
			}
		}
		return true
	}, 20*time.Second, 10*time.Millisecond)
	got, encoded := enc.all()
	require.Contains(t, encoded, true)
	want, have := byJob(rec.all()), byJob(got)
	for _, c := range goldenCases {
		for i := range scrapes {
			requireSameWire(t, want[c.file][i], have[c.file][i], fmt.Sprintf("%s scrape %d", c.file, i))
		}
	}
}
