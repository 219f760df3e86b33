package events

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// Job is one scrape job as published in the jobs bucket.
type Job struct {
	V    int    `json:"v"`
	Name string `json:"name"`
	// Config is one Prometheus scrape_config as YAML.
	Config string `json:"config"`
	// Hash identifies Config; targets carry it as their ConfigHash.
	Hash string `json:"hash"`
}

// NewJob returns a Job of the current Version whose Hash is ConfigHash(config).
func NewJob(name, config string) Job {
	return Job{V: Version, Name: name, Config: config, Hash: ConfigHash(config)}
}

// ConfigHash is a suggested Job.Hash: 16 hex digits of xxhash64 of the
// config text. Any non-empty string works; only equality matters.
func ConfigHash(config string) string { return formatID(xxhash.Sum64String(config)) }

// JobKey is the key of a job in the jobs bucket: "j." followed by the name
// in unpadded base64url, because job names may hold characters that are not
// allowed in NATS subjects.
func JobKey(name string) string {
	return jobKeyPrefix + base64.RawURLEncoding.EncodeToString([]byte(name))
}

const jobKeyPrefix = "j."

// parseJobKey returns the job name a jobs-bucket key stands for.
func parseJobKey(key string) (string, bool) {
	enc, ok := strings.CutPrefix(key, jobKeyPrefix)
	if !ok || enc == "" {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Validate checks a job as a receiver would. The error is a
// *ValidationError naming the offending field.
func (j Job) Validate() error {
	switch {
	case j.V != Version:
		return invalid("job", "v", ReasonVersion, "version %d, want %d", j.V, Version)
	case j.Name == "":
		return invalid("job", "name", ReasonName, "empty")
	case !utf8.ValidString(j.Name):
		return invalid("job", "name", ReasonName, "not valid UTF-8")
	case j.Config == "":
		return invalid("job", "config", ReasonConfig, "empty")
	case j.Hash == "":
		return invalid("job", "hash", ReasonHash, "empty")
	}
	return nil
}

// DecodeJob parses and validates a job value.
func DecodeJob(b []byte) (Job, error) {
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return Job{}, invalid("job", "json", ReasonJSON, "%v", err)
	}
	if err := j.Validate(); err != nil {
		return Job{}, err
	}
	return j, nil
}

// Reasons a value is rejected; they are the reason label of
// allot_events_invalid_total, so the set is small and fixed.
const (
	ReasonJSON       = "json"
	ReasonVersion    = "version"
	ReasonID         = "id"
	ReasonJob        = "job"
	ReasonAddress    = "address"
	ReasonLabelName  = "label_name"
	ReasonLabelValue = "label_value"
	ReasonName       = "name"
	ReasonConfig     = "config"
	ReasonHash       = "hash"
	// ReasonKey: the key is malformed or does not match the value.
	ReasonKey = "key"
)

// ValidationError says why a job or target was rejected.
type ValidationError struct {
	Kind   string // "job" or "target"
	Field  string // the JSON field at fault, or "json" if it did not parse
	Reason string // one of the Reason* constants
	Detail string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("events: invalid %s: %s: %s", e.Kind, e.Field, e.Detail)
}

func invalid(kind, field, reason, format string, args ...any) error {
	return &ValidationError{Kind: kind, Field: field, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// reasonOf is the metric reason for err.
func reasonOf(err error) string {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return "other"
}
