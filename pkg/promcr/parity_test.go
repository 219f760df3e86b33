package promcr

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/stretchr/testify/require"
	yamlv2 "go.yaml.in/yaml/v2"
)

// TestOperatorParity feeds the inputs of Prometheus Operator's own config
// generation tests to Generate and compares the result with the operator's
// golden files (testdata/operator/*.yaml), both loaded the way Prometheus
// loads a configuration. The operator's shard relabelings (__tmp_hash,
// $(SHARD)) are dropped first: allot assigns targets to scrapers itself.
func TestOperatorParity(t *testing.T) {
	cases, err := filepath.Glob("testdata/operator/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, cases)
	for _, path := range cases {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(t *testing.T) {
			cfg, in, secrets, expected := loadCaseExpected(t, path)
			require.NotEmpty(t, expected)
			got, skipped := Generate(cfg, in.res, secrets)
			require.Empty(t, skipped)
			require.Empty(t, in.undecodable)

			var want []*promconfig.ScrapeConfig
			require.NoError(t, yamlv2.UnmarshalStrict([]byte(expected), &want))
			g, err := newGenerator(cfg, nil)
			require.NoError(t, err)
			for _, sc := range want {
				sc.RelabelConfigs = slices.DeleteFunc(sc.RelabelConfigs, isShardRelabeling)
				require.NoError(t, sc.Validate(g.global))
			}
			wantYAML, err := yamlv2.Marshal(want)
			require.NoError(t, err)
			gotYAML, err := yamlv2.Marshal(got)
			require.NoError(t, err)
			require.Equal(t, string(wantYAML), string(gotYAML))
		})
	}
}

func isShardRelabeling(rc *relabel.Config) bool {
	return rc.TargetLabel == "__tmp_hash" || slices.Contains(rc.SourceLabels, model.LabelName("__tmp_hash"))
}
