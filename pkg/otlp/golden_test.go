package otlp

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/prototext"
)

var update = flag.Bool("update", false, "rewrite the golden testdata/*.json files")

// goldenCase is one exposition in testdata, scraped by a real scrape manager
// with the given scrape config options; the first scrape's pdata must equal
// testdata/<file>.json.
type goldenCase struct {
	file        string
	contentType string
	config      string // extra scrape_config lines
}

var goldenCases = []goldenCase{
	{file: "counter_gauge.txt", contentType: "text/plain; version=0.0.4; charset=utf-8"},
	{file: "histogram_summary.txt", contentType: "text/plain; version=0.0.4; charset=utf-8"},
	{file: "openmetrics.om", contentType: "application/openmetrics-text; version=1.0.0; charset=utf-8"},
	{file: "target_info.om", contentType: "application/openmetrics-text; version=1.0.0; charset=utf-8"},
	{file: "nhcb.txt", contentType: "text/plain; version=0.0.4; charset=utf-8", config: "convert_classic_histograms_to_nhcb: true"},
	{
		file:        "native.pbtext",
		contentType: "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
		config:      "scrape_protocols: [PrometheusProto]\n  scrape_native_histograms: true",
	},
}

// body returns what the target serves for a testdata file: the file, or for
// .pbtext the length-delimited protobuf encoding of its messages.
func body(t *testing.T, file string) []byte {
	raw, err := os.ReadFile(filepath.Join("testdata", file))
	require.NoError(t, err)
	if !strings.HasSuffix(file, ".pbtext") {
		return raw
	}
	var buf bytes.Buffer
	for _, block := range strings.Split(string(raw), "\n---\n") {
		var mf dto.MetricFamily
		require.NoError(t, prototext.Unmarshal([]byte(block), &mf), file)
		_, err := protodelim.MarshalTo(&buf, &mf)
		require.NoError(t, err)
	}
	return buf.Bytes()
}

// goldenScrape serves every golden exposition at /<file> until the test
// ends, and returns a scrape configuration with a job for each (named after
// the file, scraped every interval with timeout), the jobs' targets and the
// server's host:port.
func goldenScrape(t *testing.T, interval, timeout string) (string, map[string][]*targetgroup.Group, string) {
	t.Helper()
	mux := http.NewServeMux()
	for _, c := range goldenCases {
		b := body(t, c.file)
		mux.HandleFunc("/"+c.file, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", c.contentType)
			_, _ = w.Write(b)
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)

	var cfg strings.Builder
	cfg.WriteString("scrape_configs:\n")
	tsets := map[string][]*targetgroup.Group{}
	for _, c := range goldenCases {
		fmt.Fprintf(&cfg, "- job_name: %q\n  metrics_path: /%s\n  scrape_interval: %s\n  scrape_timeout: %s\n", c.file, c.file, interval, timeout)
		if c.config != "" {
			fmt.Fprintf(&cfg, "  %s\n", c.config)
		}
		tsets[c.file] = []*targetgroup.Group{{
			Source:  c.file,
			Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(u.Host)}},
		}}
	}
	return cfg.String(), tsets, u.Host
}

func TestGolden(t *testing.T) {
	cfg, tsets, host := goldenScrape(t, "1s", "900ms")
	rec := &recorder{}
	app := NewAppendable(rec, Options{ScopeVersion: "test"}, nil, nil)
	runManagerConfig(t, app, cfg, tsets)

	first := func(job string) (pmetric.Metrics, bool) {
		for _, md := range rec.all() {
			rm := md.ResourceMetrics().At(0)
			if v, _ := rm.Resource().Attributes().Get("service.name"); v.Str() == job {
				return md, true
			}
		}
		return pmetric.Metrics{}, false
	}
	require.Eventually(t, func() bool {
		for _, c := range goldenCases {
			if _, ok := first(c.file); !ok {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond)

	for _, c := range goldenCases {
		t.Run(c.file, func(t *testing.T) {
			md, _ := first(c.file)
			got := normalize(t, md, host)
			path := filepath.Join("testdata", c.file+".json")
			if *update {
				require.NoError(t, os.WriteFile(path, got, 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, string(want), string(got))
		})
	}
}

// normalize makes one scrape's pdata reproducible: it removes the report
// series (up, scrape_*; their values are timings, tested elsewhere), names
// the scrape timestamp SCRAPE_TS and the target address TARGET:PORT, and
// indents the JSON.
func normalize(t *testing.T, md pmetric.Metrics, hostport string) []byte {
	t.Helper()
	var scrapeTS string
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		sms := md.ResourceMetrics().At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			sms.At(j).Metrics().RemoveIf(func(m pmetric.Metric) bool {
				if m.Name() == "up" {
					scrapeTS = strconv.FormatUint(uint64(m.Gauge().DataPoints().At(0).Timestamp()), 10)
				}
				return m.Name() == "up" || strings.HasPrefix(m.Name(), "scrape_")
			})
		}
		sms.RemoveIf(func(sm pmetric.ScopeMetrics) bool { return sm.Metrics().Len() == 0 })
	}
	require.NotEmpty(t, scrapeTS, "no up series")
	raw, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(md)
	require.NoError(t, err)
	_, port, _ := strings.Cut(hostport, ":")
	s := string(raw)
	s = strings.ReplaceAll(s, `"`+scrapeTS+`"`, `"SCRAPE_TS"`)
	s = strings.ReplaceAll(s, hostport, "TARGET:PORT")
	s = strings.ReplaceAll(s, `{"intValue":"`+port+`"}`, `{"intValue":"PORT"}`)
	var out bytes.Buffer
	require.NoError(t, json.Indent(&out, []byte(s), "", "  "))
	out.WriteByte('\n')
	return out.Bytes()
}
