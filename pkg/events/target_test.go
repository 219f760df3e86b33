package events

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func validTarget() Target {
	return NewTarget("node", map[string]string{
		"__address__":      "10.0.0.1:9100",
		"__scheme__":       "http",
		"__metrics_path__": "/metrics",
		"env":              "prod",
	}, "abc")
}

func TestTargetID(t *testing.T) {
	// FNV-1a 64 computed by hand for job "j", label a="b":
	// bytes 'j' 0xff 'a' 0xff 'b' 0xff.
	h := fnvOffset
	for _, b := range []byte{'j', 0xff, 'a', 0xff, 'b', 0xff} {
		h = (h ^ uint64(b)) * fnvPrime
	}
	for _, tc := range []struct {
		name   string
		job    string
		labels map[string]string
		want   string
	}{
		{"by hand", "j", map[string]string{"a": "b"}, formatID(h)},
		{"order does not matter", "j", map[string]string{"b": "2", "a": "1"}, TargetID("j", map[string]string{"a": "1", "b": "2"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := TargetID(tc.job, tc.labels)
			require.Equal(t, tc.want, got)
			require.Len(t, got, 16)
			require.True(t, ValidID(got))
		})
	}
	// Separators keep label boundaries apart.
	require.NotEqual(t, TargetID("j", map[string]string{"ab": "c"}), TargetID("j", map[string]string{"a": "bc"}))
	require.NotEqual(t, TargetID("ja", map[string]string{"b": "c"}), TargetID("j", map[string]string{"ab": "c"}))
	require.NotEqual(t, TargetID("a", nil), TargetID("b", nil))
}

func TestSlotOfAndKeys(t *testing.T) {
	for _, tc := range []struct {
		id   string
		slot int
		key  string
	}{
		{"0000000000000000", 0, "s0000.0000000000000000"},
		{"003fffffffffffff", 0, "s0000.003fffffffffffff"},
		{"0040000000000000", 1, "s0001.0040000000000000"},
		{"0a80000000000000", 42, "s0042.0a80000000000000"},
		{"ffc0000000000000", 1023, "s1023.ffc0000000000000"},
		{"ffffffffffffffff", 1023, "s1023.ffffffffffffffff"},
		{"FFFFFFFFFFFFFFFF", -1, ""},
		{"fff", -1, ""},
		{"zzzzzzzzzzzzzzzz", -1, ""},
	} {
		t.Run(tc.id, func(t *testing.T) {
			require.Equal(t, tc.slot, SlotOf(tc.id))
			if tc.slot < 0 {
				return
			}
			require.Equal(t, tc.key, TargetKey(tc.id))
			slot, id, ok := parseTargetKey(tc.key)
			require.True(t, ok)
			require.Equal(t, tc.slot, slot)
			require.Equal(t, tc.id, formatID(id))
		})
	}
	for _, bad := range []string{"s0001.0000000000000000", "s0000.000000000000000", "x0000.0000000000000000", "s1024.ffffffffffffffff", "s0000.0040000000000000", "s-001.zzzzzzzzzzzzzzzz"} {
		_, _, ok := parseTargetKey(bad)
		require.False(t, ok, bad)
	}
}

// Slots must be evenly used also for label sets that repeat a value, as
// Prometheus's instance = __address__ does; the low bits of FNV-1a are not.
func TestSlotSpread(t *testing.T) {
	const n = 50000
	for _, tc := range []struct {
		name string
		gen  func(i int) Target
	}{
		{"instance=address", func(i int) Target {
			a := fmt.Sprintf("node-%d.example.com:9100", i)
			return NewTarget("node", map[string]string{"__address__": a, "instance": a}, "")
		}},
		{"pods", func(i int) Target {
			return NewTarget("pods", map[string]string{"__address__": fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255), "pod": fmt.Sprintf("app-%d", i)}, "")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var counts [Slots]int
			for i := 0; i < n; i++ {
				counts[SlotOf(tc.gen(i).ID)]++
			}
			mean := float64(n) / Slots
			for s, c := range counts {
				// Poisson with mean ~49: 5 sigma is ~35.
				require.InDelta(t, mean, float64(c), 35, "slot %d", s)
			}
		})
	}
}

func TestJobKey(t *testing.T) {
	for _, name := range []string{"node", "kubernetes-pods", "a/b c.d*>", "ünïcode"} {
		k := JobKey(name)
		require.True(t, strings.HasPrefix(k, "j."))
		require.NotContains(t, k[2:], ".")
		got, ok := parseJobKey(k)
		require.True(t, ok)
		require.Equal(t, name, got)
	}
	_, ok := parseJobKey("j.!!")
	require.False(t, ok)
	_, ok = parseJobKey("x.bm9kZQ")
	require.False(t, ok)
}

func TestTargetValidate(t *testing.T) {
	withLabels := func(mod func(map[string]string)) Target {
		tg := validTarget()
		l := map[string]string{}
		for k, v := range tg.Labels {
			l[k] = v
		}
		mod(l)
		return NewTarget(tg.Job, l, tg.ConfigHash)
	}
	for _, tc := range []struct {
		name   string
		t      Target
		field  string
		reason string
	}{
		{"valid", validTarget(), "", ""},
		{"wrong version", func() Target { x := validTarget(); x.V = 2; return x }(), "v", ReasonVersion},
		{"zero version", func() Target { x := validTarget(); x.V = 0; return x }(), "v", ReasonVersion},
		{"id mismatch", func() Target { x := validTarget(); x.ID = "0123456789abcdef"; return x }(), "id", ReasonID},
		{"id upper case", func() Target { x := validTarget(); x.ID = strings.ToUpper(x.ID); return x }(), "id", ReasonID},
		{"id short", func() Target { x := validTarget(); x.ID = "abc"; return x }(), "id", ReasonID},
		{"empty job", func() Target { x := validTarget(); x.Job = ""; x.ID = TargetID("", x.Labels); return x }(), "job", ReasonJob},
		{"no address", withLabels(func(l map[string]string) { delete(l, "__address__") }), "labels", ReasonAddress},
		{"nil labels", NewTarget("j", nil, ""), "labels", ReasonAddress},
		{"bad label name", withLabels(func(l map[string]string) { l["1abc"] = "x" }), "labels", ReasonLabelName},
		{"dash in label name", withLabels(func(l map[string]string) { l["a-b"] = "x" }), "labels", ReasonLabelName},
		{"empty label name", withLabels(func(l map[string]string) { l[""] = "x" }), "labels", ReasonLabelName},
		{"invalid utf8 value", withLabels(func(l map[string]string) { l["a"] = "\xff\xfe" }), "labels", ReasonLabelValue},
		{"underscore names ok", withLabels(func(l map[string]string) { l["_x9"] = "" }), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.t.Validate()
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tc.field, ve.Field)
			require.Equal(t, tc.reason, ve.Reason)
			require.Contains(t, err.Error(), tc.field)
		})
	}
}

func TestDecodeTarget(t *testing.T) {
	good, err := EncodeTarget(validTarget())
	require.NoError(t, err)
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(good, &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	for _, tc := range []struct {
		name   string
		in     []byte
		reason string
	}{
		{"valid", good, ""},
		{"unknown field ignored", mutate(func(m map[string]any) { m["extra"] = 1 }), ""},
		{"malformed json", []byte(`{"v":1,`), ReasonJSON},
		{"not an object", []byte(`[1,2]`), ReasonJSON},
		{"empty", nil, ReasonJSON},
		{"wrong type", mutate(func(m map[string]any) { m["v"] = "1" }), ReasonJSON},
		{"wrong version", mutate(func(m map[string]any) { m["v"] = 2 }), ReasonVersion},
		{"missing version", mutate(func(m map[string]any) { delete(m, "v") }), ReasonVersion},
		{"id mismatch", mutate(func(m map[string]any) { m["labels"].(map[string]any)["env"] = "dev" }), ReasonID},
		{"bad label name", mutate(func(m map[string]any) { m["labels"].(map[string]any)["a.b"] = "x" }), ReasonLabelName},
		{"null labels", mutate(func(m map[string]any) { m["labels"] = nil }), ReasonAddress},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTarget(tc.in)
			if tc.reason == "" {
				require.NoError(t, err)
				require.NoError(t, got.Validate())
				require.Equal(t, validTarget(), got)
				return
			}
			require.Error(t, err)
			require.Equal(t, tc.reason, reasonOf(err))
			require.Equal(t, Target{}, got)
		})
	}
}

func TestDecodeJob(t *testing.T) {
	good := NewJob("node", "job_name: node\nstatic_configs: []\n")
	for _, tc := range []struct {
		name   string
		in     string
		reason string
	}{
		{"valid", mustJSON(t, good), ""},
		{"malformed json", `{"v":1,"name":`, ReasonJSON},
		{"wrong version", `{"v":3,"name":"a","config":"x","hash":"h"}`, ReasonVersion},
		{"empty name", `{"v":1,"name":"","config":"x","hash":"h"}`, ReasonName},
		{"empty config", `{"v":1,"name":"a","config":"","hash":"h"}`, ReasonConfig},
		{"empty hash", `{"v":1,"name":"a","config":"x","hash":""}`, ReasonHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeJob([]byte(tc.in))
			if tc.reason == "" {
				require.NoError(t, err)
				require.Equal(t, good, got)
				return
			}
			var ve *ValidationError
			require.True(t, errors.As(err, &ve), "%v", err)
			require.Equal(t, tc.reason, ve.Reason)
		})
	}
	require.Equal(t, ConfigHash("a"), NewJob("x", "a").Hash)
	require.NotEqual(t, ConfigHash("a"), ConfigHash("b"))
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestConfigFlags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	require.Equal(t, Config{JobsBucket: "allot_jobs", TargetsBucket: "allot_targets", Replicas: 1}, c)
	require.Equal(t, c, Config{}.withDefaults())
	require.NoError(t, c.Validate())
	require.NoError(t, fs.Parse([]string{"--events.replicas=3", "--events.targets-bucket=t2"}))
	require.Equal(t, Config{JobsBucket: "allot_jobs", TargetsBucket: "t2", Replicas: 3}, c)
	require.Error(t, Config{JobsBucket: "a", TargetsBucket: "a"}.Validate())
	require.Error(t, Config{Replicas: 7}.Validate())
}

func FuzzDecodeTarget(f *testing.F) {
	good, _ := EncodeTarget(validTarget())
	f.Add(good)
	f.Add([]byte(`{"v":1,"id":"0000000000000000","job":"j","labels":{"__address__":"x"}}`))
	f.Add([]byte(`{"v":1,"labels":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeTarget(b)
		if err != nil {
			if reasonOf(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("decoded target fails Validate: %v", err)
		}
		if SlotOf(got.ID) < 0 {
			t.Fatalf("decoded target has no slot: %q", got.ID)
		}
		// What a receiver accepts survives a publish round trip.
		b2, err := EncodeTarget(got)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeTarget(b2)
		if err != nil {
			t.Fatalf("re-encoded target rejected: %v", err)
		}
		if TargetID(again.Job, again.Labels) != got.ID {
			t.Fatal("id changed in round trip")
		}
	})
}
