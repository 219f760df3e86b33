package promcr

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v2"
	corev1 "k8s.io/api/core/v1"
)

// store reads the Secret and ConfigMap keys a resource refers to, in the
// resource's namespace (Prometheus Operator allows no other).
type store struct {
	ns string
	g  SecretGetter
}

func (s store) secret(sel corev1.SecretKeySelector) (string, error) {
	if sel.Name == "" || sel.Key == "" {
		return "", &skipError{CauseSecret, errors.New("secret reference without name or key")}
	}
	v, err := s.g.Secret(s.ns, sel.Name, sel.Key)
	if err != nil {
		return "", &skipError{CauseSecret, fmt.Errorf("secret %s/%s key %q: %w", s.ns, sel.Name, sel.Key, err)}
	}
	return v, nil
}

func (s store) configMap(sel corev1.ConfigMapKeySelector) (string, error) {
	if sel.Name == "" || sel.Key == "" {
		return "", &skipError{CauseSecret, errors.New("configmap reference without name or key")}
	}
	v, err := s.g.ConfigMap(s.ns, sel.Name, sel.Key)
	if err != nil {
		return "", &skipError{CauseSecret, fmt.Errorf("configmap %s/%s key %q: %w", s.ns, sel.Name, sel.Key, err)}
	}
	return v, nil
}

// key reads a SecretOrConfigMap; an empty one reads as "".
func (s store) key(sel monitoringv1.SecretOrConfigMap) (string, error) {
	switch {
	case sel.Secret != nil && sel.ConfigMap != nil:
		return "", invalidf("cannot specify both secret and configMap")
	case sel.Secret != nil:
		return s.secret(*sel.Secret)
	case sel.ConfigMap != nil:
		return s.configMap(*sel.ConfigMap)
	}
	return "", nil
}

func item(k string, v any) yaml.MapItem { return yaml.MapItem{Key: k, Value: v} }

// tlsSpec is a TLS configuration with its Secret and ConfigMap references
// resolved: Prometheus's tls_config takes ca, cert and key inline, so the
// scrapers need no files.
type tlsSpec struct {
	ca, cert, key                      string
	caFile, certFile, keyFile          string
	serverName                         string
	insecureSkipVerify                 *bool
	minVersion, maxVersion             string
	hasCA, hasCert, hasKey             bool
	hasCAFile, hasCertFile, hasKeyFile bool
}

// safeTLS resolves a SafeTLSConfig; nil for nil.
func (s store) safeTLS(c *monitoringv1.SafeTLSConfig) (*tlsSpec, error) {
	if c == nil {
		return nil, nil
	}
	if err := c.Validate(); err != nil {
		return nil, invalidf("tlsConfig: %w", err)
	}
	t := &tlsSpec{insecureSkipVerify: c.InsecureSkipVerify}
	var err error
	if c.CA.Secret != nil || c.CA.ConfigMap != nil {
		if t.ca, err = s.key(c.CA); err != nil {
			return nil, fmt.Errorf("tlsConfig ca: %w", err)
		}
		t.hasCA = true
	}
	if c.Cert.Secret != nil || c.Cert.ConfigMap != nil {
		if t.cert, err = s.key(c.Cert); err != nil {
			return nil, fmt.Errorf("tlsConfig cert: %w", err)
		}
		t.hasCert = true
	}
	if c.KeySecret != nil {
		if t.key, err = s.secret(*c.KeySecret); err != nil {
			return nil, fmt.Errorf("tlsConfig keySecret: %w", err)
		}
		t.hasKey = true
	}
	if c.ServerName != nil {
		t.serverName = *c.ServerName
	}
	if c.MinVersion != nil {
		t.minVersion = string(*c.MinVersion)
	}
	if c.MaxVersion != nil {
		t.maxVersion = string(*c.MaxVersion)
	}
	return t, nil
}

// jobTLS resolves a job's SafeTLSConfig. An empty one counts as none, so
// that the job takes the scrape class's TLS configuration whole, as in
// Prometheus Operator.
func (s store) jobTLS(c *monitoringv1.SafeTLSConfig) (*tlsSpec, error) {
	t, err := s.safeTLS(c)
	if err != nil || t.isZero() {
		return nil, err
	}
	return t, nil
}

// fileTLS resolves a ServiceMonitor's TLSConfig, which may also name files.
func (s store) fileTLS(c *monitoringv1.TLSConfig) (*tlsSpec, error) {
	if c == nil {
		return nil, nil
	}
	if err := c.Validate(); err != nil {
		return nil, invalidf("tlsConfig: %w", err)
	}
	t, err := s.safeTLS(&c.SafeTLSConfig)
	if err != nil {
		return nil, err
	}
	t.caFile, t.hasCAFile = c.CAFile, c.CAFile != ""
	t.certFile, t.hasCertFile = c.CertFile, c.CertFile != ""
	t.keyFile, t.hasKeyFile = c.KeyFile, c.KeyFile != ""
	return t, nil
}

// classTLS is the scrape class's TLS configuration, nil if it has none.
func classTLS(sc *ScrapeClass) *tlsSpec {
	c := sc.TLSConfig
	if c == nil {
		return nil
	}
	t := &tlsSpec{
		ca: c.CA, cert: c.Cert, key: string(c.Key),
		caFile: c.CAFile, certFile: c.CertFile, keyFile: c.KeyFile,
		serverName: c.ServerName,
		hasCA:      c.CA != "", hasCert: c.Cert != "", hasKey: c.Key != "",
		hasCAFile: c.CAFile != "", hasCertFile: c.CertFile != "", hasKeyFile: c.KeyFile != "",
	}
	if c.InsecureSkipVerify {
		t.insecureSkipVerify = new(true)
	}
	if c.MinVersion != 0 {
		t.minVersion = c.MinVersion.String()
	}
	if c.MaxVersion != 0 {
		t.maxVersion = c.MaxVersion.String()
	}
	return t
}

// mergeTLS applies a scrape class as Prometheus Operator does: a job
// without TLS settings takes the class's whole; a job with some takes only
// the CA, certificate and key that it lacks and the class has.
func mergeTLS(t *tlsSpec, sc *ScrapeClass) *tlsSpec {
	ct := classTLS(sc)
	if t == nil {
		return ct
	}
	if ct == nil {
		return t
	}
	if !t.hasCA && !t.hasCAFile {
		t.ca, t.hasCA, t.caFile, t.hasCAFile = ct.ca, ct.hasCA, ct.caFile, ct.hasCAFile
	}
	if !t.hasCert && !t.hasCertFile {
		t.cert, t.hasCert, t.certFile, t.hasCertFile = ct.cert, ct.hasCert, ct.certFile, ct.hasCertFile
	}
	if !t.hasKey && !t.hasKeyFile {
		t.key, t.hasKey, t.keyFile, t.hasKeyFile = ct.key, ct.hasKey, ct.keyFile, ct.hasKeyFile
	}
	return t
}

func (t *tlsSpec) isZero() bool {
	return t == nil || reflect.ValueOf(*t).IsZero()
}

func addTLS(cfg yaml.MapSlice, t *tlsSpec) yaml.MapSlice {
	if t == nil {
		return cfg
	}
	var m yaml.MapSlice
	if t.insecureSkipVerify != nil {
		m = append(m, item("insecure_skip_verify", *t.insecureSkipVerify))
	}
	if t.hasCA {
		m = append(m, item("ca", t.ca))
	}
	if t.hasCert {
		m = append(m, item("cert", t.cert))
	}
	if t.hasKey {
		m = append(m, item("key", t.key))
	}
	if t.serverName != "" {
		m = append(m, item("server_name", t.serverName))
	}
	if t.minVersion != "" {
		m = append(m, item("min_version", t.minVersion))
	}
	if t.maxVersion != "" {
		m = append(m, item("max_version", t.maxVersion))
	}
	if t.hasCAFile {
		m = append(m, item("ca_file", t.caFile))
	}
	if t.hasCertFile {
		m = append(m, item("cert_file", t.certFile))
	}
	if t.hasKeyFile {
		m = append(m, item("key_file", t.keyFile))
	}
	return append(cfg, item("tls_config", m))
}

// addClient writes a job's HTTP client settings: redirects, HTTP/2, proxy,
// TLS and credentials, with the scrape class's TLS and authorization merged
// in. t is the job's TLS configuration, already resolved (nil: none), since
// the kinds spell theirs differently.
func (s store) addClient(cfg yaml.MapSlice, hc *monitoringv1.HTTPConfigWithoutTLS, proxy monitoringv1.ProxyConfig, t *tlsSpec, sc *ScrapeClass) (yaml.MapSlice, error) {
	cfg = addOptional(cfg, "follow_redirects", hc.FollowRedirects)
	cfg = addOptional(cfg, "enable_http2", hc.EnableHTTP2)
	var err error
	if cfg, err = s.addProxy(cfg, proxy); err != nil {
		return nil, err
	}
	cfg = addTLS(cfg, mergeTLS(t, sc))
	//nolint:staticcheck // bearerTokenSecret is deprecated but still honoured.
	if hc.BearerTokenSecret != nil && hc.BearerTokenSecret.Name != "" {
		tok, err := s.secret(*hc.BearerTokenSecret)
		if err != nil {
			return nil, fmt.Errorf("bearerTokenSecret: %w", err)
		}
		cfg = append(cfg, item("bearer_token", tok))
	}
	if cfg, err = s.addBasicAuth(cfg, hc.BasicAuth); err != nil {
		return nil, err
	}
	if cfg, err = s.addOAuth2(cfg, hc.OAuth2); err != nil {
		return nil, err
	}
	a, err := s.safeAuthz(hc.Authorization)
	if err != nil {
		return nil, err
	}
	return addAuthz(cfg, mergeAuthz(a, sc)), nil
}

func (s store) addBasicAuth(cfg yaml.MapSlice, ba *monitoringv1.BasicAuth) (yaml.MapSlice, error) {
	if ba == nil {
		return cfg, nil
	}
	user, err := s.secret(ba.Username)
	if err != nil {
		return nil, fmt.Errorf("basicAuth username: %w", err)
	}
	pass, err := s.secret(ba.Password)
	if err != nil {
		return nil, fmt.Errorf("basicAuth password: %w", err)
	}
	return append(cfg, item("basic_auth", yaml.MapSlice{item("username", user), item("password", pass)})), nil
}

// authz is an authorization with its credentials resolved.
type authz struct {
	typ             string
	credentials     *string
	credentialsFile string
}

func (s store) safeAuthz(a *monitoringv1.SafeAuthorization) (*authz, error) {
	if a == nil || reflect.ValueOf(*a).IsZero() {
		return nil, nil
	}
	// As in Prometheus Operator, an authorization without credentials is
	// valid here (it may take the scrape class's); monitors' endpoints
	// reject it in their own validation.
	if a.Credentials != nil {
		if err := a.Validate(); err != nil {
			return nil, invalidf("authorization: %w", err)
		}
	}
	out := &authz{typ: a.Type}
	if a.Credentials != nil {
		v, err := s.secret(*a.Credentials)
		if err != nil {
			return nil, fmt.Errorf("authorization credentials: %w", err)
		}
		out.credentials = &v
	}
	return out, nil
}

// mergeAuthz applies a scrape class as Prometheus Operator does: a job
// without authorization takes the class's; one without credentials takes
// the class's credentials (or credentials file).
func mergeAuthz(a *authz, sc *ScrapeClass) *authz {
	ca := sc.Authorization
	if ca == nil {
		return a
	}
	var class authz
	class.typ = ca.Type
	if ca.Credentials != "" {
		v := string(ca.Credentials)
		class.credentials = &v
	}
	class.credentialsFile = ca.CredentialsFile
	if a == nil {
		return &class
	}
	if a.credentials == nil {
		a.credentials = class.credentials
	}
	if a.credentials == nil && a.credentialsFile == "" {
		a.credentialsFile = class.credentialsFile
	}
	return a
}

func addAuthz(cfg yaml.MapSlice, a *authz) yaml.MapSlice {
	if a == nil {
		return cfg
	}
	typ := strings.TrimSpace(a.typ)
	if typ == "" {
		typ = "Bearer"
	}
	m := yaml.MapSlice{item("type", typ)}
	if a.credentials != nil {
		m = append(m, item("credentials", *a.credentials))
	}
	if a.credentialsFile != "" {
		m = append(m, item("credentials_file", a.credentialsFile))
	}
	return append(cfg, item("authorization", m))
}

func (s store) addOAuth2(cfg yaml.MapSlice, o *monitoringv1.OAuth2) (yaml.MapSlice, error) {
	if o == nil {
		return cfg, nil
	}
	if err := o.Validate(); err != nil {
		return nil, invalidf("oauth2: %w", err)
	}
	id, err := s.key(o.ClientID)
	if err != nil {
		return nil, fmt.Errorf("oauth2 clientId: %w", err)
	}
	secret, err := s.secret(o.ClientSecret)
	if err != nil {
		return nil, fmt.Errorf("oauth2 clientSecret: %w", err)
	}
	m := yaml.MapSlice{item("client_id", id), item("client_secret", secret), item("token_url", string(o.TokenURL))}
	if len(o.Scopes) > 0 {
		m = append(m, item("scopes", o.Scopes))
	}
	if len(o.EndpointParams) > 0 {
		m = append(m, item("endpoint_params", sortedMap(o.EndpointParams)))
	}
	if m, err = s.addProxy(m, o.ProxyConfig); err != nil {
		return nil, fmt.Errorf("oauth2: %w", err)
	}
	t, err := s.safeTLS(o.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("oauth2: %w", err)
	}
	m = addTLS(m, t)
	return append(cfg, item("oauth2", m)), nil
}

func (s store) addProxy(cfg yaml.MapSlice, pc monitoringv1.ProxyConfig) (yaml.MapSlice, error) {
	if reflect.ValueOf(pc).IsZero() {
		return cfg, nil
	}
	if err := pc.Validate(); err != nil {
		return nil, invalidf("proxy: %w", err)
	}
	if pc.ProxyURL != nil {
		cfg = append(cfg, item("proxy_url", *pc.ProxyURL))
	}
	if pc.NoProxy != nil {
		cfg = append(cfg, item("no_proxy", *pc.NoProxy))
	}
	if pc.ProxyFromEnvironment != nil {
		cfg = append(cfg, item("proxy_from_environment", *pc.ProxyFromEnvironment))
	}
	if len(pc.ProxyConnectHeader) > 0 {
		var headers yaml.MapSlice
		for _, k := range sortedKeys(pc.ProxyConnectHeader) {
			vals := make([]string, 0, len(pc.ProxyConnectHeader[k]))
			for _, sel := range pc.ProxyConnectHeader[k] {
				v, err := s.secret(sel)
				if err != nil {
					return nil, fmt.Errorf("proxyConnectHeader %s: %w", k, err)
				}
				vals = append(vals, v)
			}
			headers = append(headers, item(k, vals))
		}
		cfg = append(cfg, item("proxy_connect_header", headers))
	}
	return cfg, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedMap[V any](m map[string]V) yaml.MapSlice {
	out := make(yaml.MapSlice, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, item(k, m[k]))
	}
	return out
}
