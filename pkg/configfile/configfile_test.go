package configfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	type exporters struct {
		OTLP struct {
			Endpoint string `yaml:"endpoint"`
		} `yaml:"otlp"`
	}
	for _, tc := range []struct {
		name     string
		body     string
		wantErr  []string // fragments the error must contain
		wantJobs int
		wantOTLP string
	}{
		{
			name:     "plain prometheus config",
			body:     "global:\n  scrape_interval: 5s\nscrape_configs:\n- job_name: a\n  static_configs:\n  - targets: [localhost:1]\n",
			wantJobs: 1,
		},
		{
			name:     "allot section between prometheus sections",
			body:     "global:\n  scrape_interval: 5s\nallot:\n  exporters:\n    otlp:\n      endpoint: http://x:4318\nscrape_configs:\n- job_name: a\n  static_configs:\n  - targets: [localhost:1]\n",
			wantJobs: 1,
			wantOTLP: "http://x:4318",
		},
		{
			name:    "unknown prometheus field names line and field",
			body:    "global:\n  scrape_interval: 5s\nallot:\n  exporters: {}\nscrape_configs:\n- job_name: a\n  scrape_intervl: 5s\n",
			wantErr: []string{"line 7", "scrape_intervl"},
		},
		{
			name:    "bad duration",
			body:    "scrape_configs:\n- job_name: a\n  scrape_interval: fast\n",
			wantErr: []string{"line 3", "fast"},
		},
		{
			name:    "duplicate job",
			body:    "scrape_configs:\n- job_name: a\n- job_name: a\n",
			wantErr: []string{`"a"`},
		},
		{
			name:    "malformed allot section",
			body:    "allot:\n  exporters: [\n",
			wantErr: []string{"allot section"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "allot.yml")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := Load(path, nil)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("loaded, want an error")
				}
				for _, frag := range append(tc.wantErr, path) {
					if !strings.Contains(err.Error(), frag) {
						t.Errorf("error %q does not mention %q", err, frag)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := len(f.Prometheus.ScrapeConfigs); n != tc.wantJobs {
				t.Errorf("%d jobs, want %d", n, tc.wantJobs)
			}
			var ex exporters
			ok, err := f.Allot("exporters", &ex)
			if err != nil {
				t.Fatal(err)
			}
			if ok != (tc.wantOTLP != "") || ex.OTLP.Endpoint != tc.wantOTLP {
				t.Errorf("exporters present=%v endpoint=%q, want %q", ok, ex.OTLP.Endpoint, tc.wantOTLP)
			}
		})
	}
}

func TestAllotUnknownFieldNamesLine(t *testing.T) {
	f, err := Parse([]byte("scrape_configs: []\nallot:\n  exporters:\n    otlp:\n      endpoint: x\n      bogus: 1\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		OTLP struct {
			Endpoint string `yaml:"endpoint"`
		} `yaml:"otlp"`
	}
	_, err = f.Allot("exporters", &v)
	if err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("err = %v, want it to name the unknown field", err)
	}
}

func TestCheckSections(t *testing.T) {
	f, err := Parse([]byte("allot:\n  exporters: {}\n  exporter: {}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CheckSections("exporters", "prometheus_cr"); err == nil || !strings.Contains(err.Error(), "allot.exporter ") {
		t.Fatalf("err = %v, want it to name allot.exporter", err)
	}
	f, _ = Parse([]byte("allot:\n  exporters: {}\n"), nil)
	if err := f.CheckSections("exporters"); err != nil {
		t.Fatal(err)
	}
}
