package targetallocator

import (
	"encoding/json"
	"log/slog"
	"reflect"
	"testing"

	commoncfg "github.com/prometheus/common/config"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
)

func TestConfigCacheKeepsLastGoodConfigOfAJob(t *testing.T) {
	cat := newCatalog(func(bool) {})
	cc := newConfigCache(cat, slog.New(slog.DiscardHandler), newMetrics(nil))
	_, ok := cc.get(false)
	require.False(t, ok, "nothing to serve before the catalog is read")

	good := events.NewJob("j", jobConfig(t, "j"))
	bad := events.NewJob("j", "job_name: j\nscrape_interval: not-a-duration\n")
	newJob := events.NewJob("k", "job_name: k\nscrape_interval: [\n")

	cat.UpsertJob(good)
	cat.Synced()
	b1, ok := cc.get(false)
	require.True(t, ok)

	for _, tc := range []struct {
		name string
		job  events.Job
		want []string
	}{
		{"a bad config keeps the last good one", bad, []string{"j"}},
		{"a new job with a bad config is left out", newJob, []string{"j"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cat.UpsertJob(tc.job)
			b, ok := cc.get(false)
			require.True(t, ok)
			var m map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(b.data, &m))
			require.ElementsMatch(t, tc.want, sortedKeys(m))
			require.JSONEq(t, string(b1.data), string(b.data))
		})
	}
	cat.DeleteJob("j")
	b, _ := cc.get(false)
	require.JSONEq(t, `{}`, string(b.data), "a deleted job is no longer served")
}

func TestRedactSecretsFindsEverySecret(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		secrets []string
	}{
		{"basic auth, TLS key, proxy and HTTP headers", `job_name: j
basic_auth: {username: u, password: p1}
tls_config: {key: p2, cert_file: /c}
proxy_url: http://proxy
proxy_connect_header: {X-A: [p3]}
http_headers: {X-B: {secrets: [p4], values: [visible]}}
`, []string{"p1", "p2", "p3", "p4"}},
		{"oauth2", `job_name: j
oauth2: {client_id: c, client_secret: p5, token_url: "http://t", tls_config: {key: p6, cert_file: /c}}
`, []string{"p5", "p6"}},
		{"authorization", `job_name: j
authorization: {credentials: p7}
`, []string{"p7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sc promconfig.ScrapeConfig
			require.NoError(t, unmarshalScrapeConfig([]byte(tc.yaml), &sc))
			var before []string
			walkSecrets(reflect.ValueOf(sc), func(s string) { before = append(before, s) })
			require.ElementsMatch(t, tc.secrets, before)

			redactSecrets(reflect.ValueOf(&sc))
			var after []string
			walkSecrets(reflect.ValueOf(sc), func(s string) { after = append(after, s) })
			require.Len(t, after, len(tc.secrets))
			for _, s := range after {
				require.Equal(t, secretToken, s)
			}

			red, sec, err := renderJob(tc.yaml)
			require.NoError(t, err)
			for _, p := range tc.secrets {
				require.NotContains(t, string(red), `"`+p+`"`)
				require.Contains(t, string(sec), `"`+p+`"`)
			}
		})
	}
}

// walkSecrets calls fn with every commoncfg.Secret under v.
func walkSecrets(v reflect.Value, fn func(string)) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkSecrets(v.Elem(), fn)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				walkSecrets(v.Field(i), fn)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkSecrets(v.Index(i), fn)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			walkSecrets(v.MapIndex(k), fn)
		}
	case reflect.String:
		if v.Type() == reflect.TypeFor[commoncfg.Secret]() && v.Len() > 0 {
			fn(v.String())
		}
	}
}
