package demo

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestTargetServesRealisticMetrics(t *testing.T) {
	s := NewSet(3)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	for _, tc := range []struct {
		path       string
		minSeries  int
		wantFamily []string
	}{
		{Path(0), 200, []string{"http_requests_total", "http_request_duration_seconds", "worker_queue_depth", "demo_build_info"}},
		{Path(2), 200, []string{"http_response_size_bytes", "sensor_temperature_celsius"}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(resp.Body)
			if err != nil {
				t.Fatalf("parse exposition: %v", err)
			}
			series := 0
			for _, f := range fams {
				for _, m := range f.Metric {
					switch {
					case m.Histogram != nil:
						series += len(m.Histogram.Bucket) + 3
					case m.Summary != nil:
						series += len(m.Summary.Quantile) + 2
					default:
						series++
					}
				}
			}
			if series < tc.minSeries {
				t.Errorf("%d series, want at least %d", series, tc.minSeries)
			}
			for _, name := range tc.wantFamily {
				if _, ok := fams[name]; !ok {
					t.Errorf("family %s missing", name)
				}
			}
		})
	}
}

func TestSDListsEveryTarget(t *testing.T) {
	s := NewSet(4)
	s.Host = "demo:9100"
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/sd")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	if err := json.Unmarshal(body, &groups); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if len(groups) != 4 {
		t.Fatalf("%d groups, want 4", len(groups))
	}
	for i, g := range groups {
		if g.Targets[0] != "demo:9100" || g.Labels["__metrics_path__"] != Path(i) || !strings.HasPrefix(g.Labels["instance"], "demo-") {
			t.Errorf("group %d = %+v", i, g)
		}
	}
}
