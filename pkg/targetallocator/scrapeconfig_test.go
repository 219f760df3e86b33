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
	const y = `job_name: j
basic_auth: {username: u, password: p1}
authorization: {credentials: p2}
oauth2: {client_id: c, client_secret: p3, token_url: "http://t"}
tls_config: {cert: "-----BEGIN CERTIFICATE-----", key: p4}
proxy_connect_header: {X-A: [p5]}
http_headers: {X-B: {secrets: [p6], values: [visible]}}
`
	var sc promconfig.ScrapeConfig
	require.NoError(t, unmarshalScrapeConfig([]byte(y), &sc))
	redactSecrets(reflect.ValueOf(&sc))
	var secrets []string
	walkSecrets(reflect.ValueOf(sc), func(s string) { secrets = append(secrets, s) })
	require.Len(t, secrets, 6)
	for _, s := range secrets {
		require.Equal(t, secretToken, s)
	}
	red, _, err := renderJob(y)
	require.NoError(t, err)
	for _, p := range []string{"p1", "p2", "p3", "p4", "p5", "p6"} {
		require.NotContains(t, string(red), `"`+p+`"`)
	}
	require.Contains(t, string(red), "visible")
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
