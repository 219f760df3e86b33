package promcr

import (
	"context"
	"fmt"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// BenchmarkGenerate measures what the Watcher runs after every (coalesced)
// change: n ServiceMonitors of two endpoints each, one with basic auth from
// a Secret read through APISecrets. "cold" generates everything (the first
// generation, or Generate); "one-changed" is a regeneration after one
// ServiceMonitor changed, the others reused from the memo.
func BenchmarkGenerate(b *testing.B) {
	for _, bc := range []struct {
		n    int
		warm bool
	}{{100, false}, {1000, false}, {100, true}, {1000, true}} {
		n := bc.n
		mode := "cold"
		if bc.warm {
			mode = "one-changed"
		}
		b.Run(fmt.Sprintf("servicemonitors=%d/%s", n, mode), func(b *testing.B) {
			client := fake.NewClientset(&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "auth"},
				Data:       map[string][]byte{"user": []byte("u"), "pass": []byte("p")},
			})
			var in Resources
			for i := range n {
				in.ServiceMonitors = append(in.ServiceMonitors, &monitoringv1.ServiceMonitor{
					ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("sm-%d", i),
						UID: types.UID(fmt.Sprintf("uid-%d", i)), ResourceVersion: "1"},
					Spec: monitoringv1.ServiceMonitorSpec{
						Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i)}},
						Endpoints: []monitoringv1.Endpoint{
							{Port: "web", Interval: "15s", RelabelConfigs: []monitoringv1.RelabelConfig{{TargetLabel: "x", Replacement: new("y")}}},
							{Port: "admin", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
								HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{HTTPConfigWithoutTLS: monitoringv1.HTTPConfigWithoutTLS{
									BasicAuth: &monitoringv1.BasicAuth{
										Username: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "auth"}, Key: "user"},
										Password: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "auth"}, Key: "pass"},
									},
								}},
							}},
						},
					},
				})
			}
			cfg := Config{Enabled: true}
			var m *memo
			if bc.warm {
				m = newMemo()
				generateWith(cfg, in, NewAPISecrets(context.Background(), client), m)
			}
			version := 1
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				version++
				in.ServiceMonitors[0].ResourceVersion = fmt.Sprint(version)
				r := generateWith(cfg, in, NewAPISecrets(context.Background(), client), m)
				if len(r.configs) != 2*n || len(r.skipped) != 0 {
					b.Fatalf("%d configs, %d skipped", len(r.configs), len(r.skipped))
				}
			}
		})
	}
}
