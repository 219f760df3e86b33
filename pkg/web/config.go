package web

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EffectiveConfig is what /config shows.
type EffectiveConfig struct {
	// YAML is the configuration the process runs; empty when it runs
	// none (a rebalancer has no scrape configuration).
	YAML string `json:"yaml"`
	// Note says where the configuration comes from, or why there is none.
	Note string `json:"note,omitempty"`
}

// ConfigSource returns the effective configuration. It is called on every
// request, so that the page shows what runs now (after a reload), not what
// ran at start.
type ConfigSource func() (EffectiveConfig, error)

type configView struct {
	nav
	EffectiveConfig
	Err string
}

// ConfigPage serves /config: the effective configuration, with secrets
// redacted by RedactYAML whatever the source gives (marshalling Prometheus
// configs shows secrets in a process that runs a discoverer), and a note
// saying where it comes from. ?format=json gives {"yaml": "...", "note":
// "..."} in the Prometheus API envelope, as Prometheus's
// /api/v1/status/config does; ?format=yaml the bare text (the note as a
// comment).
func ConfigPage(src ConfigSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := src()
		if err == nil && c.YAML != "" {
			c.YAML, err = RedactYAML(c.YAML)
		}
		if err != nil {
			if wantsJSON(r) {
				WriteError(w, http.StatusInternalServerError, "internal", err)
				return
			}
			w.WriteHeader(http.StatusInternalServerError)
			render(w, "config.html", configView{nav: nav{Title: "Config", Active: "config"}, Err: err.Error()})
			return
		}
		switch {
		case r.URL.Query().Get("format") == "yaml":
			w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
			if c.Note != "" {
				_, _ = w.Write([]byte("# " + strings.ReplaceAll(c.Note, "\n", "\n# ") + "\n"))
			}
			_, _ = w.Write([]byte(c.YAML))
		case wantsJSON(r):
			WriteJSON(w, c)
		default:
			render(w, "config.html", configView{nav: nav{Title: "Config", Active: "config"}, EffectiveConfig: c})
		}
	})
}

// secretKey matches the keys whose values are secrets in Prometheus and
// allot configs: password, bearer_token, credentials, client_secret,
// secret(s), *_token, api_key, authorization... but not their *_file
// variants, which name files.
var secretKey = regexp.MustCompile(`(?i)(password|passwd|secret|secrets|token|credentials|api_?key|access_?key|authorization|private_key)$`)

// secretMaps are keys whose every value is a secret (proxy headers in
// Prometheus HTTP client configs; headers of exporters, which carry API
// keys and bearer tokens).
var secretMaps = regexp.MustCompile(`(?i)^(proxy_connect_header|headers)$`)

var tlsKey = regexp.MustCompile(`(?i)tls`)

// RedactYAML replaces the values of secret keys in a YAML document with
// "<secret>": the keys secretKey matches, "key" in a TLS block, and every
// value under proxy_connect_header and headers. Values that are already
// "<secret>" or empty are left alone.
func RedactYAML(text string) (string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return "", fmt.Errorf("parse config for redaction: %w", err)
	}
	if doc.Kind == 0 {
		return text, nil
	}
	redactNode(&doc, "", false)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return "", fmt.Errorf("encode redacted config: %w", err)
	}
	return b.String(), nil
}

// redactNode walks n; parent is the key n is the value of, and all says
// every scalar below is a secret.
func redactNode(n *yaml.Node, parent string, all bool) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			redactNode(c, parent, all)
		}
	case yaml.MappingNode:
		tls := tlsKey.MatchString(parent)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			secret := secretKey.MatchString(k) || (tls && k == "key")
			if v.Kind == yaml.MappingNode {
				// authorization: {type: Bearer, credentials: ...}: only
				// the credentials are secret.
				secret = false
			}
			redactNode(v, k, all || secret || secretMaps.MatchString(k))
		}
	case yaml.ScalarNode:
		if all && n.Value != "" && n.Value != "<secret>" && n.Tag != "!!null" && n.Tag != "!!bool" {
			n.Value, n.Tag, n.Style = "<secret>", "!!str", 0
		}
	case yaml.AliasNode:
		// An alias points at a node redacted where it is defined.
	}
}
