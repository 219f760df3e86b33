package promcr

import (
	"context"
	"fmt"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// BenchmarkGenerate measures a full regeneration, which the Watcher runs
// after every (coalesced) change: n ServiceMonitors of two endpoints each,
// one with basic auth from a Secret, read through APISecrets.
func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("servicemonitors=%d", n), func(b *testing.B) {
			client := fake.NewClientset(&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "auth"},
				Data:       map[string][]byte{"user": []byte("u"), "pass": []byte("p")},
			})
			var in Resources
			for i := range n {
				in.ServiceMonitors = append(in.ServiceMonitors, &monitoringv1.ServiceMonitor{
					ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("sm-%d", i)},
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
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r := generate(cfg, in, NewAPISecrets(context.Background(), client))
				if len(r.configs) != 2*n || len(r.skipped) != 0 {
					b.Fatalf("%d configs, %d skipped", len(r.configs), len(r.skipped))
				}
			}
		})
	}
}
