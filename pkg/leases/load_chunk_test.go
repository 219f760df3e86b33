package leases

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestLoadEntryForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want TargetLoad
		bad  bool
	}{
		{name: "first format: series only", in: `42`, want: TargetLoad{Series: 42}},
		{name: "series in an array", in: `[42]`, want: TargetLoad{Series: 42}},
		{name: "rates", in: `[42,2.8,0.000812]`, want: TargetLoad{Series: 42, SamplesPerSecond: 2.8, ScrapeSecondsPerSecond: 0.000812}},
		{name: "zone", in: `[42,2.8,8.12e-05,"eu-1a"]`, want: TargetLoad{Series: 42, SamplesPerSecond: 2.8, ScrapeSecondsPerSecond: 8.12e-05, Zone: "eu-1a"}},
		{name: "escaped zone", in: `[1,0,0,"a\"b,c\\"]`, want: TargetLoad{Series: 1, Zone: `a"b,c\`}},
		{name: "spaces", in: ` [ 7 , 1 , 2 , "z" ] `, want: TargetLoad{Series: 7, SamplesPerSecond: 1, ScrapeSecondsPerSecond: 2, Zone: "z"}},
		{name: "later elements ignored", in: `[1,2,3,"z",{"more":[1,2]},9]`, want: TargetLoad{Series: 1, SamplesPerSecond: 2, ScrapeSecondsPerSecond: 3, Zone: "z"}},
		{name: "empty array", in: `[]`, want: TargetLoad{}},
		{name: "fractional series", in: `1.5`, bad: true},
		{name: "string", in: `"x"`, bad: true},
		{name: "zone not a string", in: `[1,2,3,4]`, bad: true},
		{name: "rate not a number", in: `[1,"x"]`, bad: true},
		{name: "not JSON", in: `[1,2,3,"z",]`, bad: true},
		{name: "infinity", in: `[1,Inf]`, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(`{"t":` + tc.in + `}`)
			got, err := decodeChunk(in)
			if tc.bad {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, map[string]TargetLoad{"t": tc.want}, got)
			// The scanner, where it applies, agrees with encoding/json.
			slow, err := decodeChunkJSON(in)
			require.NoError(t, err)
			require.Equal(t, slow, got)
		})
	}
}

func TestLoadChunkRoundTrip(t *testing.T) {
	t.Parallel()
	per := map[string]TargetLoad{
		"a":       {Series: 10},
		"b":       {Series: 10, SamplesPerSecond: 0.6666666, ScrapeSecondsPerSecond: 0.0008123},
		"c":       {Series: 0, ScrapeSecondsPerSecond: 0.25},
		"d":       {Series: 3, Zone: "z1"},
		"e\"\x01": {Series: 123456789, SamplesPerSecond: 123456.7, ScrapeSecondsPerSecond: 1.23456e-7, Zone: "zöne"},
	}
	ids := []string{"a", "b", "c", "d", "e\"\x01"}
	b := appendChunk(nil, ids, per)
	require.True(t, json.Valid(b), "%s", b)
	require.Equal(t, `{"a":10,"b":[10,0.667,0.000812],"c":[0,0,0.25],"d":[3,0,0,"z1"],`, string(b[:len(`{"a":10,"b":[10,0.667,0.000812],"c":[0,0,0.25],"d":[3,0,0,"z1"],`)]))
	got, err := decodeChunk(b)
	require.NoError(t, err)
	slow, err := decodeChunkJSON(b)
	require.NoError(t, err)
	require.Equal(t, slow, got)
	fast, ok := scanChunk(appendChunk(nil, ids[:4], per))
	require.True(t, ok, "the scanner reads what appendChunk writes")
	require.Len(t, fast, 4)
	for _, id := range ids {
		want := per[id]
		want.SamplesPerSecond, want.ScrapeSecondsPerSecond = round3(want.SamplesPerSecond), round3(want.ScrapeSecondsPerSecond)
		require.Equal(t, want, got[id], id)
	}
	require.Equal(t, 123000.0, got["e\"\x01"].SamplesPerSecond)
	require.Equal(t, 1.23e-7, got["e\"\x01"].ScrapeSecondsPerSecond)
}

func TestRound3(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]float64{
		0: 0, -1: 0, 1: 1, 0.66666: 0.667, 1234.5: 1230, 0.00081249: 0.000812, 99999: 1e5,
	} {
		require.Equal(t, want, round3(in), "%g", in)
	}
}

// TestLoadOldReports: a report in the first format (per-target series
// only, as scrapers before the per-target rates write it) reads as before,
// by ListLoads and by a LoadWatch, next to a report in the current format.
func TestLoadOldReports(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	old := te.session(t, SessionConfig{}, nil)
	// Exactly what the first format's PutLoad wrote.
	_, err := te.cli.Put(ctx, ks.Load("old")+"/0", `{"0000000000000001":12,"0000000000000002":7}`, clientv3.WithLease(old.id))
	require.NoError(t, err)
	_, err = te.cli.Put(ctx, ks.Load("old"), `{"scraper":"old","targets":2,"series":19,"samples_per_second":1.3,"scrape_seconds_per_second":0.01,"updated":"2025-01-01T00:00:00Z","chunks":1}`, clientv3.WithLease(old.id))
	require.NoError(t, err)
	cur := te.session(t, SessionConfig{}, nil)
	require.NoError(t, PutLoad(ctx, cur, ks, Load{Scraper: "new", Targets: 1, Series: 5, PerTarget: map[string]TargetLoad{
		"0000000000000003": {Series: 5, SamplesPerSecond: 0.333, ScrapeSecondsPerSecond: 0.002, Zone: "b"},
	}}))

	want := map[string]TargetLoad{
		"0000000000000001": {Series: 12},
		"0000000000000002": {Series: 7},
	}
	got, err := ListLoads(ctx, te.cli, ks)
	require.NoError(t, err)
	require.Equal(t, want, got["old"].PerTarget)
	require.Equal(t, int64(19), got["old"].Series)
	require.Equal(t, TargetLoad{Series: 5, SamplesPerSecond: 0.333, ScrapeSecondsPerSecond: 0.002, Zone: "b"}, got["new"].PerTarget["0000000000000003"])

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := WatchLoads(wctx, te.cli, ks, nil, nil)
	watched, err := w.Loads(ctx)
	require.NoError(t, err)
	require.Equal(t, got, watched)
	cancel()
	<-w.Done()
}

// TestLoadRateSlack: rates that drift within loadRateSlack of what was
// stored rewrite no chunk; a larger change, or any change of series or
// zone, rewrites the chunk with every rate in it fresh.
func TestLoadRateSlack(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := Keyspace{}
	ctx := testCtx(t)
	s := te.session(t, SessionConfig{}, nil)
	const n = 50
	report := func(f func(i int) TargetLoad) {
		t.Helper()
		l := Load{Scraper: "a", Targets: n, PerTarget: map[string]TargetLoad{}}
		for i := range n {
			l.PerTarget[fmt.Sprintf("t%02d", i)] = f(i)
		}
		require.NoError(t, PutLoad(ctx, s, ks, l))
	}
	chunk := func() (int64, map[string]TargetLoad) {
		t.Helper()
		r, err := te.cli.Get(ctx, ks.Load("a")+"/0")
		require.NoError(t, err)
		require.Len(t, r.Kvs, 1)
		c, err := decodeChunk(r.Kvs[0].Value)
		require.NoError(t, err)
		return r.Kvs[0].ModRevision, c
	}
	base := func(i int) TargetLoad {
		return TargetLoad{Series: 100, SamplesPerSecond: 100.0 / 15, ScrapeSecondsPerSecond: 0.01 / 15, Zone: "z"}
	}
	report(base)
	_, c0 := chunk()
	require.Equal(t, 0.000667, c0["t00"].ScrapeSecondsPerSecond)

	for _, tc := range []struct {
		name    string
		f       func(i int) TargetLoad
		rewrite bool
		// check, if set, looks at the chunk after the report.
		check func(t *testing.T, c map[string]TargetLoad)
	}{
		{name: "scrape time jitters within the slack", f: func(i int) TargetLoad {
			tl := base(i)
			tl.ScrapeSecondsPerSecond *= []float64{0.7, 1.4, 0.9, 1.1}[i%4]
			return tl
		}},
		{name: "one scrape time beyond the slack", rewrite: true, f: func(i int) TargetLoad {
			tl := base(i)
			if i == 3 {
				tl.ScrapeSecondsPerSecond *= 3
			}
			if i == 4 {
				tl.ScrapeSecondsPerSecond *= 1.2 // within: stored fresh anyway
			}
			return tl
		}, check: func(t *testing.T, c map[string]TargetLoad) {
			require.Equal(t, 0.002, c["t03"].ScrapeSecondsPerSecond)
			require.Equal(t, 0.0008, c["t04"].ScrapeSecondsPerSecond)
		}},
		{name: "back within the slack of the fresh values", f: func(i int) TargetLoad {
			tl := base(i)
			if i == 3 {
				tl.ScrapeSecondsPerSecond *= 2.5
			}
			return tl
		}},
		{name: "a rate from zero", rewrite: true, f: func(i int) TargetLoad {
			tl := base(i)
			if i == 0 {
				tl.SamplesPerSecond = 0
			}
			return tl
		}},
		{name: "one series", rewrite: true, f: func(i int) TargetLoad {
			tl := base(i)
			if i == 5 {
				tl.Series++
			}
			return tl
		}},
		{name: "one zone", rewrite: true, f: func(i int) TargetLoad {
			tl := base(i)
			if i == 5 {
				tl.Zone = "y"
			}
			return tl
		}},
		{name: "same again", f: func(i int) TargetLoad {
			tl := base(i)
			if i == 5 {
				tl.Zone = "y"
			}
			return tl
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev, before := chunk()
			report(tc.f)
			after, c := chunk()
			if !tc.rewrite {
				require.Equal(t, rev, after, "chunk rewritten")
				require.Equal(t, before, c)
				return
			}
			require.Greater(t, after, rev, "chunk not rewritten")
			for i := range n {
				id := fmt.Sprintf("t%02d", i)
				want := tc.f(i)
				want.SamplesPerSecond, want.ScrapeSecondsPerSecond = round3(want.SamplesPerSecond), round3(want.ScrapeSecondsPerSecond)
				require.Equal(t, want, c[id], id)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// BenchmarkLoadChunk measures the per-target cost of a load chunk: the
// bytes etcd stores (and sends to the rebalancer's watch) per target, and
// the time to encode and decode it, for the first format (series only, as
// json.Marshal of map[string]int64 wrote it) and the current one with
// rates, and with rates and a zone. Run:
//
//	go test -run='^$' -bench=BenchmarkLoadChunk -benchmem ./pkg/leases/
func BenchmarkLoadChunk(b *testing.B) {
	ids := targets(loadChunkTargets)
	per := map[string]TargetLoad{}
	for i, id := range ids {
		series := int64(50 + i*7919%5000) // 50 to 5049 series
		iv := []float64{10, 15, 30, 60}[i%4]
		per[id] = TargetLoad{
			Series:                 series,
			SamplesPerSecond:       float64(series) / iv,
			ScrapeSecondsPerSecond: (0.002 + float64(series)*1e-5) / iv,
			Zone:                   []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}[i%3],
		}
	}
	old := make(map[string]int64, len(per))
	for id, tl := range per {
		old[id] = tl.Series
	}
	noZone := make(map[string]TargetLoad, len(per))
	for id, tl := range per {
		tl.Zone = ""
		noZone[id] = tl
	}
	for _, tc := range []struct {
		name   string
		encode func() []byte
		decode func([]byte) (int, error)
	}{
		{"first-format", func() []byte {
			v, _ := json.Marshal(old)
			return v
		}, func(v []byte) (int, error) {
			var c map[string]int64
			err := json.Unmarshal(v, &c)
			return len(c), err
		}},
		{"rates", func() []byte { return appendChunk(nil, ids, noZone) }, decodeLen},
		{"rates+zone", func() []byte { return appendChunk(nil, ids, per) }, decodeLen},
	} {
		b.Run(tc.name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			var v []byte
			for range b.N {
				v = tc.encode()
			}
			b.ReportMetric(float64(len(v))/float64(len(ids)), "B/target")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/target")
		})
		b.Run(tc.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			v := tc.encode()
			for range b.N {
				if n, err := tc.decode(v); err != nil || n != len(ids) {
					b.Fatal(n, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/target")
		})
	}
}

func decodeLen(v []byte) (int, error) {
	c, err := decodeChunk(v)
	return len(c), err
}
