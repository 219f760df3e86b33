package targetallocator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"
	commoncfg "github.com/prometheus/common/config"
	promconfig "github.com/prometheus/prometheus/config"
	"go.yaml.in/yaml/v2"
	sigsyaml "sigs.k8s.io/yaml"
)

// secretToken is what Prometheus writes for a secret it does not show.
const secretToken = "<secret>"

// body is one rendered answer with its entity tag.
type body struct {
	data []byte
	etag string
}

func newBody(data []byte) body {
	return body{data: data, etag: `"` + strconv.FormatUint(xxhash.Sum64(data), 16) + `"`}
}

// jobJSON is one job's scrape config as served, in both forms.
type jobJSON struct {
	hash     string // events.Job.Hash it was rendered from
	redacted json.RawMessage
	secret   json.RawMessage
}

// configCache renders /scrape_configs from the catalog's jobs: a JSON
// object job name → scrape config, as the Target Allocator serves it. It
// renders again only when the jobs change, and keeps the last good
// rendering of a job whose config no longer converts, so that one bad
// publication cannot make collectors drop the job.
type configCache struct {
	cat     *catalog
	logger  *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	jobGen   uint64
	rendered bool
	redacted body
	secret   body
	jobs     map[string]jobJSON
}

func newConfigCache(cat *catalog, logger *slog.Logger, m *metrics) *configCache {
	return &configCache{cat: cat, logger: logger, metrics: m, jobs: map[string]jobJSON{}}
}

// get returns the answer with secrets redacted, or with secrets when
// withSecrets (the request came over TLS, as the Target Allocator does).
// ok is false until the catalog's first snapshot has arrived.
func (c *configCache) get(withSecrets bool) (body, bool) {
	c.cat.mu.RLock()
	synced, gen := c.cat.synced, c.cat.jobGen
	c.cat.mu.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !synced && !c.rendered {
		return body{}, false
	}
	if !c.rendered || gen != c.jobGen {
		c.render()
	}
	if withSecrets {
		return c.secret, true
	}
	return c.redacted, true
}

// render rebuilds both answers; c.mu held.
func (c *configCache) render() {
	c.cat.mu.RLock()
	gen := c.cat.jobGen
	jobs := make(map[string]string, len(c.cat.jobs))
	hashes := make(map[string]string, len(c.cat.jobs))
	for name, j := range c.cat.jobs {
		jobs[name], hashes[name] = j.Config, j.Hash
	}
	c.cat.mu.RUnlock()

	invalid := 0
	for name, cfg := range jobs {
		if prev, ok := c.jobs[name]; ok && prev.hash == hashes[name] {
			continue
		}
		redacted, secret, err := renderJob(cfg)
		if err != nil {
			invalid++
			if _, had := c.jobs[name]; had {
				c.logger.Warn("job config cannot be served; serving its previous config", "job", name, "err", err)
			} else {
				c.logger.Warn("job config cannot be served; leaving the job out", "job", name, "err", err)
			}
			continue
		}
		c.jobs[name] = jobJSON{hash: hashes[name], redacted: redacted, secret: secret}
	}
	for name := range c.jobs {
		if _, ok := jobs[name]; !ok {
			delete(c.jobs, name)
		}
	}
	c.metrics.invalidJobs.Set(float64(invalid))

	red := make(map[string]json.RawMessage, len(c.jobs))
	sec := make(map[string]json.RawMessage, len(c.jobs))
	for name, j := range c.jobs {
		red[name], sec[name] = j.redacted, j.secret
	}
	c.redacted, c.secret = newBody(mustJSON(red)), newBody(mustJSON(sec))
	c.jobGen, c.rendered = gen, true
}

// renderJob turns one published scrape config (YAML, with its secrets, as
// the discoverer publishes it: no SD configs, no relabel_configs) into the
// JSON the Collector's target allocator client expects, once with every
// secret replaced by "<secret>" and once as is.
func renderJob(cfgYAML string) (redacted, secret json.RawMessage, err error) {
	var sc promconfig.ScrapeConfig
	if err := unmarshalScrapeConfig([]byte(cfgYAML), &sc); err != nil {
		return nil, nil, err
	}
	// The published YAML is the one copy that has the secrets; the redacted
	// form is re-marshalled from a copy whose secrets are blanked, because
	// whether Prometheus marshals secrets is a process-wide switch
	// (commoncfg.MarshalSecretValue) that the discoverer turns on.
	redactSecrets(reflect.ValueOf(&sc))
	red, err := yaml.Marshal(&sc)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal scrape config: %w", err)
	}
	if redacted, err = toJSON(red); err != nil {
		return nil, nil, err
	}
	if secret, err = toJSON([]byte(cfgYAML)); err != nil {
		return nil, nil, err
	}
	return redacted, secret, nil
}

// unmarshalScrapeConfig parses one scrape config as Prometheus loads it.
func unmarshalScrapeConfig(y []byte, sc *promconfig.ScrapeConfig) error {
	if err := yaml.UnmarshalStrict(y, sc); err != nil {
		return fmt.Errorf("parse scrape config: %w", err)
	}
	return nil
}

var secretType = reflect.TypeFor[commoncfg.Secret]()

// redactSecrets replaces every non-empty commoncfg.Secret reachable from v
// (struct fields, pointers, slices, maps, interfaces) with "<secret>".
// Typing finds them all, including in fields Prometheus adds later.
func redactSecrets(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			redactSecrets(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				redactSecrets(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			redactSecrets(v.Index(i))
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			// Map values are not addressable: redact a copy and store it.
			cp := reflect.New(v.Type().Elem()).Elem()
			cp.Set(v.MapIndex(k))
			redactSecrets(cp)
			v.SetMapIndex(k, cp)
		}
	case reflect.String:
		if v.Type() == secretType && v.Len() > 0 && v.CanSet() {
			v.SetString(secretToken)
		}
	}
}

// toJSON converts a YAML scrape config to JSON as the Target Allocator
// does, including its workaround for keepequal/dropequal rules: Prometheus
// marshals them with the default regex, and then refuses to load them
// because a regex is set (prometheus/prometheus#12534), so the key is
// dropped.
func toJSON(y []byte) (json.RawMessage, error) {
	j, err := sigsyaml.YAMLToJSON(y)
	if err != nil {
		return nil, fmt.Errorf("convert scrape config to JSON: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("scrape config is not an object: %w", err)
	}
	for _, key := range []string{"relabel_configs", "metric_relabel_configs"} {
		rules, _ := m[key].([]any)
		for _, r := range rules {
			if rule, ok := r.(map[string]any); ok && (rule["action"] == "keepequal" || rule["action"] == "dropequal") {
				delete(rule, "regex")
			}
		}
	}
	return mustJSON(m), nil
}

// mustJSON encodes v without HTML escaping (this is an API, and "<secret>"
// should read as such). v is always encodable here.
func mustJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("encode JSON: %v", err))
	}
	return bytes.TrimRight(b.Bytes(), "\n")
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
