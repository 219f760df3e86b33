package promcr

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"
	yamlv2 "go.yaml.in/yaml/v2"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

var update = flag.Bool("update", false, "rewrite the golden testdata/*.golden.yaml files")

// A golden case, testdata/<case>.yaml:
//
//	config:      # the `allot: prometheus_cr:` section, decoded as the file is
//	namespaces:  # name → labels, for namespace_selector
//	objects:     # ServiceMonitors, PodMonitors, Probes, ScrapeConfigs,
//	             # Secrets and ConfigMaps, as kubectl would apply them
//
// testdata/<case>.golden.yaml is what Generate makes of it: the scrape
// configs as Prometheus marshals them, with secrets in clear
// (MarshalSecretValue, set by TestMain, so the golden files show that the
// values were read from the API), and the skipped resources with their
// reasons. Secrets and ConfigMaps are served by client-go's fake clientset
// through APISecrets, the getter the Watcher uses.
type goldenCase struct {
	Config     yaml.Node                    `yaml:"config"`
	Namespaces map[string]map[string]string `yaml:"namespaces"`
	Objects    []map[string]any             `yaml:"objects"`
	// Expected is set in testdata/operator cases only (see parity_test.go).
	Expected string `yaml:"expected"`
}

type goldenOut struct {
	ScrapeConfigs []*promconfig.ScrapeConfig `yaml:"scrape_configs"`
	Skipped       []Skipped                  `yaml:"skipped,omitempty"`
}

func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.yaml")
	require.NoError(t, err)
	var n int
	for _, path := range cases {
		if strings.HasSuffix(path, ".golden.yaml") {
			continue
		}
		n++
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			cfg, in, secrets := loadCase(t, path)
			configs, skipped := Generate(cfg, in.res, secrets)
			skipped = append(skipped, in.undecodable...)
			got, err := yamlv2.Marshal(goldenOut{ScrapeConfigs: configs, Skipped: skipped})
			require.NoError(t, err)

			golden := strings.TrimSuffix(path, ".yaml") + ".golden.yaml"
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test -run TestGolden -update to create it")
			require.Equal(t, string(want), string(got))

			// What Generate returns must load as the file's own jobs do.
			var reloaded promconfig.Config
			require.NoError(t, yamlv2.UnmarshalStrict(got, &struct {
				ScrapeConfigs *[]*promconfig.ScrapeConfig `yaml:"scrape_configs"`
				Skipped       any                         `yaml:"skipped"`
			}{ScrapeConfigs: &reloaded.ScrapeConfigs}))
			require.Len(t, reloaded.ScrapeConfigs, len(configs))
		})
	}
	require.NotZero(t, n, "no golden cases found")
}

type loaded struct {
	res         Resources
	undecodable []Skipped
}

// loadCase reads a case: the config through Config.UnmarshalYAML, the
// resources through the Watcher's decoder, secrets into a fake clientset.
func loadCase(t *testing.T, path string) (Config, loaded, SecretGetter) {
	cfg, in, secrets, _ := loadCaseExpected(t, path)
	return cfg, in, secrets
}

func loadCaseExpected(t *testing.T, path string) (Config, loaded, SecretGetter, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var gc goldenCase
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&gc))

	var cfg Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	cfg.Enabled = true
	if !gc.Config.IsZero() {
		require.NoError(t, gc.Config.Decode(&cfg))
	}
	require.NoError(t, cfg.Validate())

	var in loaded
	in.res.Namespaces = gc.Namespaces
	client := fake.NewClientset()
	for i, o := range gc.Objects {
		j, err := json.Marshal(o)
		require.NoError(t, err)
		obj, err := runtime.Decode(unstructured.UnstructuredJSONScheme, j)
		require.NoError(t, err, "objects[%d]", i)
		u := obj.(*unstructured.Unstructured)
		ctx := context.Background()
		switch kind := u.GetKind(); kind {
		case "Secret":
			var s corev1.Secret
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s))
			_, err := client.CoreV1().Secrets(s.Namespace).Create(ctx, &s, metav1.CreateOptions{})
			require.NoError(t, err)
		case "ConfigMap":
			var cm corev1.ConfigMap
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cm))
			_, err := client.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, &cm, metav1.CreateOptions{})
			require.NoError(t, err)
		case KindServiceMonitor, KindPodMonitor, KindProbe, KindScrapeConfig:
			d, err := decode(kind, u)
			if err != nil {
				in.undecodable = append(in.undecodable, Skipped{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName(),
					Reason: "decode: " + err.Error(), Cause: CauseDecode})
				continue
			}
			switch obj := d.(type) {
			case *monitoringv1.ServiceMonitor:
				in.res.ServiceMonitors = append(in.res.ServiceMonitors, obj)
			case *monitoringv1.PodMonitor:
				in.res.PodMonitors = append(in.res.PodMonitors, obj)
			case *monitoringv1.Probe:
				in.res.Probes = append(in.res.Probes, obj)
			case *monitoringv1alpha1.ScrapeConfig:
				in.res.ScrapeConfigs = append(in.res.ScrapeConfigs, obj)
			}
		default:
			t.Fatalf("objects[%d]: unexpected kind %q", i, kind)
		}
	}
	return cfg, in, NewAPISecrets(context.Background(), client), gc.Expected
}

// TestGoldenCoverage guards the promise that the golden cases exercise
// every field the generator reads: each key below must occur in some case.
func TestGoldenCoverage(t *testing.T) {
	var all strings.Builder
	cases, err := filepath.Glob("testdata/*.yaml")
	require.NoError(t, err)
	for _, path := range cases {
		if strings.HasSuffix(path, ".golden.yaml") {
			continue
		}
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		all.Write(b)
	}
	for _, key := range []string{
		// endpoints and ports
		"port:", "targetPort:", "portNumber:",
		// scrape settings
		"interval:", "scrapeTimeout:", "path:", "scheme:", "params:", "honorLabels:", "honorTimestamps:",
		"relabelings:", "metricRelabelings:", "jobLabel:", "targetLabels:", "podTargetLabels:",
		"trackTimestampsStaleness:", "filterRunning:", "scrapeProtocols:", "fallbackScrapeProtocol:",
		"scrapeNativeHistograms:", "nativeHistogramBucketLimit:", "scrapeClass:", "attachMetadata:",
		"selectorMechanism:", "serviceDiscoveryRole:",
		// HTTP settings
		"tlsConfig:", "keySecret:", "serverName:", "insecureSkipVerify:", "caFile:",
		"basicAuth:", "authorization:", "bearerTokenSecret:", "bearerTokenFile:", "oauth2:", "proxyUrl:",
		"followRedirects:", "enableHttp2:",
		// limits
		"sampleLimit:", "targetLimit:", "labelLimit:", "labelNameLengthLimit:", "labelValueLengthLimit:",
		"keepDroppedTargets:", "bodySizeLimit:",
		// selection
		"namespaceSelector:", "matchNames:", "any:", "matchExpressions:",
		// probes and scrape configs
		"module:", "staticConfig:", "ingress:", "staticConfigs:", "fileSDConfigs:", "httpSDConfigs:",
		"kubernetesSDConfigs:", "consulSDConfigs:", "dnsSDConfigs:", "ec2SDConfigs:",
		// allot's global settings
		"service_monitor_selector:", "pod_monitor_selector:", "probe_selector:", "scrape_config_selector:",
		"namespace_selector:", "ignore_namespace_selectors:", "scrape_interval:", "scrape_timeout:",
		"override_honor_labels:", "override_honor_timestamps:", "enforced_namespace_label:",
		"enforced_sample_limit:", "enforced_target_limit:", "enforced_label_limit:",
		"enforced_label_name_length_limit:", "enforced_label_value_length_limit:",
		"enforced_keep_dropped_targets:", "enforced_body_size_limit:", "scrape_classes:",
		"pod_target_labels:", "deny_file_access:", "kubeconfig_file:",
	} {
		require.Contains(t, all.String(), key, "no golden case sets %s", key)
	}
}
