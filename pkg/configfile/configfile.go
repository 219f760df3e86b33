// Package configfile reads allot's configuration file: a Prometheus
// configuration (`global`, `scrape_configs`, ...) with an optional top-level
// `allot:` section for allot's own settings (exporters, ...).
//
// Prometheus's loader rejects unknown top-level keys, so the `allot:` block is
// blanked out line by line before the rest goes to config.Load. Blanking
// keeps every line where it was, so errors still name the right line, and the
// block itself is decoded strictly with the same line numbers.
package configfile

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/prometheus/prometheus/config"
	"go.yaml.in/yaml/v3"
)

// File is a parsed configuration file.
type File struct {
	Path       string
	Prometheus *config.Config
	// allot is the `allot:` block with the lines before it blanked, so a
	// strict decode reports the file's own line numbers; nil when absent.
	allot []byte
}

// Load reads and validates path. Errors name the file, and, where the
// parser knows them, the line and the field.
func Load(path string, logger *slog.Logger) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	f, err := Parse(b, logger)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	f.Path = path
	return f, nil
}

// Parse parses a configuration held in memory.
func Parse(b []byte, logger *slog.Logger) (*File, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	prom, allot := split(b)
	cfg, err := config.Load(string(prom), logger)
	if err != nil {
		return nil, locate(err, b)
	}
	f := &File{Prometheus: cfg}
	if allot != nil {
		f.allot = allot
		// Catch a malformed block now, not when a section is first decoded.
		var probe map[string]yaml.Node
		if err := yaml.Unmarshal(allot, &probe); err != nil {
			return nil, fmt.Errorf("allot section: %w", err)
		}
	}
	return f, nil
}

// Allot decodes the section `allot.<name>` into v, rejecting unknown fields.
// It reports whether the section was present; when it is absent v is left
// untouched so flag defaults stay in force.
func (f *File) Allot(name string, v any) (bool, error) {
	if f == nil || f.allot == nil {
		return false, nil
	}
	var doc struct {
		Allot map[string]yaml.Node `yaml:"allot"`
	}
	if err := yaml.Unmarshal(f.allot, &doc); err != nil {
		return false, fmt.Errorf("allot section: %w", err)
	}
	node, ok := doc.Allot[name]
	if !ok {
		return false, nil
	}
	var buf bytes.Buffer
	if err := yaml.NewEncoder(&buf).Encode(&node); err != nil {
		return true, fmt.Errorf("allot.%s: %w", name, err)
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return true, fmt.Errorf("allot.%s (line %d): %w", name, node.Line, err)
	}
	return true, nil
}

// AllotRaw returns the section `allot.<name>` as YAML, for packages that
// decode their section themselves, and whether it was present.
func (f *File) AllotRaw(name string) ([]byte, bool, error) {
	if f == nil || f.allot == nil {
		return nil, false, nil
	}
	var doc struct {
		Allot map[string]yaml.Node `yaml:"allot"`
	}
	if err := yaml.Unmarshal(f.allot, &doc); err != nil {
		return nil, false, fmt.Errorf("allot section: %w", err)
	}
	node, ok := doc.Allot[name]
	if !ok {
		return nil, false, nil
	}
	b, err := yaml.Marshal(&node)
	if err != nil {
		return nil, true, fmt.Errorf("allot.%s: %w", name, err)
	}
	return b, true, nil
}

// CheckSections rejects keys under `allot:` other than known, so a typo
// in a section name is an error at start instead of a setting silently
// ignored.
func (f *File) CheckSections(known ...string) error {
	keys, err := f.AllotSections()
	if err != nil {
		return err
	}
	for _, k := range keys {
		ok := false
		for _, want := range known {
			ok = ok || k == want
		}
		if !ok {
			return fmt.Errorf("config file %s: unknown section allot.%s (known: %s)", f.Path, k, strings.Join(known, ", "))
		}
	}
	return nil
}

// AllotSections lists the keys present under `allot:`.
func (f *File) AllotSections() ([]string, error) {
	if f == nil || f.allot == nil {
		return nil, nil
	}
	var doc struct {
		Allot map[string]yaml.Node `yaml:"allot"`
	}
	if err := yaml.Unmarshal(f.allot, &doc); err != nil {
		return nil, fmt.Errorf("allot section: %w", err)
	}
	keys := make([]string, 0, len(doc.Allot))
	for k := range doc.Allot {
		keys = append(keys, k)
	}
	return keys, nil
}

// locate adds the line to errors that Prometheus reports without one, such
// as a malformed duration from a custom unmarshaller: if the quoted value in
// the message occurs on exactly one line, that is the line to look at.
func locate(err error, b []byte) error {
	msg := err.Error()
	if strings.Contains(msg, "line ") {
		return err
	}
	m := quoted.FindStringSubmatch(msg)
	if m == nil {
		return err
	}
	line := 0
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, m[1]) {
			if line != 0 {
				return err
			}
			line = i + 1
		}
	}
	if line == 0 {
		return err
	}
	return fmt.Errorf("line %d: %w", line, err)
}

var quoted = regexp.MustCompile(`"([^"]+)"`)

// split returns the Prometheus part (the allot block blanked) and the allot
// block (everything else blanked), or nil if there is none.
func split(b []byte) (prom, allot []byte) {
	lines := strings.SplitAfter(string(b), "\n")
	in := false
	found := false
	var p, a strings.Builder
	for _, l := range lines {
		top := len(l) > 0 && l[0] != ' ' && l[0] != '\t' && l[0] != '#' && strings.TrimSpace(l) != ""
		if top {
			in = strings.HasPrefix(l, "allot:")
			found = found || in
		}
		nl := ""
		if strings.HasSuffix(l, "\n") {
			nl = "\n"
		}
		if in {
			p.WriteString(nl)
			a.WriteString(l)
		} else {
			p.WriteString(l)
			a.WriteString(nl)
		}
	}
	if !found {
		return b, nil
	}
	return []byte(p.String()), []byte(a.String())
}
