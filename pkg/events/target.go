package events

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Version is the schema version carried in every value as "v". A receiver
// rejects any other version rather than guess at its meaning.
const Version = 1

// Slots is the number of slots the target keyspace is split into. A
// target's slot is given by its id (see SlotOf); scrapers follow whole slots.
const Slots = 1024

// AddressLabel is the one label every target must carry.
const AddressLabel = "__address__"

// Target is one scrape target as published in the targets bucket.
type Target struct {
	V   int    `json:"v"`
	ID  string `json:"id"`
	Job string `json:"job"`
	// Labels are the final labels after relabelling, including __address__,
	// __scheme__, __metrics_path__, __param_*, __scrape_interval__ and
	// __scrape_timeout__, without __meta_*.
	Labels map[string]string `json:"labels"`
	// ConfigHash is the hash of the job's config at publish time.
	ConfigHash string `json:"config_hash"`
}

// NewTarget returns a Target of the current Version with its ID computed
// from job and labels.
func NewTarget(job string, labels map[string]string, configHash string) Target {
	return Target{V: Version, ID: TargetID(job, labels), Job: job, Labels: labels, ConfigHash: configHash}
}

// TargetID is the stable id of a target: 16 lowercase hex digits of the
// FNV-1a 64 hash over the job name, 0xff, then each label in name order as
// name, 0xff, value, 0xff. 0xff never occurs in UTF-8, so no two different
// inputs share a byte sequence.
func TargetID(job string, labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	sort.Strings(names)
	h := fnvOffset
	h = fnvString(h, job)
	h = fnvByte(h, 0xff)
	for _, n := range names {
		h = fnvString(h, n)
		h = fnvByte(h, 0xff)
		h = fnvString(h, labels[n])
		h = fnvByte(h, 0xff)
	}
	return formatID(h)
}

const (
	fnvOffset uint64 = 14695981039346656037
	fnvPrime  uint64 = 1099511628211
)

func fnvByte(h uint64, b byte) uint64 { return (h ^ uint64(b)) * fnvPrime }

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

const hexDigits = "0123456789abcdef"

func formatID(v uint64) string {
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hexDigits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}

// parseID returns the value of a canonical id: exactly 16 lowercase hex
// digits. Anything else (upper case, other lengths) is not an id, so that
// one target can never be published under two spellings.
func parseID(id string) (uint64, bool) {
	if len(id) != 16 {
		return 0, false
	}
	var v uint64
	for i := 0; i < 16; i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// ValidID reports whether id is 16 lowercase hex digits.
func ValidID(id string) bool {
	_, ok := parseID(id)
	return ok
}

// SlotOf returns the slot of a target id, or -1 if id is not a valid id.
//
// The slot is the id's top 10 bits (id × Slots / 2⁶⁴), not id mod Slots:
// the low bits of FNV-1a depend only on the low bits of the input bytes, and
// for label sets that repeat a value (instance = __address__, as Prometheus
// sets it) the lowest bit is constant, which left half of the slots empty.
func SlotOf(id string) int {
	v, ok := parseID(id)
	if !ok {
		return -1
	}
	return slotOf(v)
}

func slotOf(v uint64) int {
	hi, _ := bits.Mul64(v, Slots)
	return int(hi)
}

// TargetKey is the key of target id in the targets bucket: "s%04d.<id>".
// The slot prefix is what lets a follower subscribe to whole slots.
func TargetKey(id string) string {
	return slotPrefix(SlotOf(id)) + id
}

// slotPrefix is "s0042." for slot 42.
func slotPrefix(slot int) string {
	if slot < 0 {
		return "s-001."
	}
	var b [6]byte
	b[0] = 's'
	b[1] = hexDigits[slot/1000%10]
	b[2] = hexDigits[slot/100%10]
	b[3] = hexDigits[slot/10%10]
	b[4] = hexDigits[slot%10]
	b[5] = '.'
	return string(b[:])
}

// parseTargetKey splits a targets-bucket key into slot and id, and checks
// that the slot is the id's.
func parseTargetKey(key string) (slot int, id uint64, ok bool) {
	if len(key) != 6+16 || key[0] != 's' || key[5] != '.' {
		return 0, 0, false
	}
	s, err := strconv.Atoi(key[1:5])
	if err != nil || s < 0 || s >= Slots {
		return 0, 0, false
	}
	v, ok := parseID(key[6:])
	if !ok || slotOf(v) != s {
		return 0, 0, false
	}
	return s, v, true
}

// Validate checks a target as a receiver would. The error is a
// *ValidationError naming the offending field.
func (t Target) Validate() error {
	if t.V != Version {
		return invalid("target", "v", ReasonVersion, "version %d, want %d", t.V, Version)
	}
	if !ValidID(t.ID) {
		return invalid("target", "id", ReasonID, "%q is not 16 lowercase hex digits", t.ID)
	}
	if t.Job == "" {
		return invalid("target", "job", ReasonJob, "empty")
	}
	if !utf8.ValidString(t.Job) {
		return invalid("target", "job", ReasonJob, "not valid UTF-8")
	}
	if _, ok := t.Labels[AddressLabel]; !ok {
		return invalid("target", "labels", ReasonAddress, "no %s", AddressLabel)
	}
	for n, v := range t.Labels {
		if !validLabelName(n) {
			return invalid("target", "labels", ReasonLabelName, "invalid label name %q", n)
		}
		if !utf8.ValidString(v) {
			return invalid("target", "labels", ReasonLabelValue, "value of %s is not valid UTF-8", n)
		}
	}
	if want := TargetID(t.Job, t.Labels); t.ID != want {
		return invalid("target", "id", ReasonID, "%s does not match job and labels (%s)", t.ID, want)
	}
	return nil
}

// validLabelName reports whether n matches [a-zA-Z_][a-zA-Z0-9_]*.
func validLabelName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// EncodeTarget is the encoding PutTargets stores, so a caller can compare
// ValueHash(EncodeTarget(t)) with a Snapshot.
func EncodeTarget(t Target) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encode target %s: %w", t.ID, err)
	}
	return b, nil
}

// DecodeTarget parses and validates a target value.
func DecodeTarget(b []byte) (Target, error) {
	var t Target
	if err := json.Unmarshal(b, &t); err != nil {
		return Target{}, invalid("target", "json", ReasonJSON, "%v", err)
	}
	if err := t.Validate(); err != nil {
		return Target{}, err
	}
	return t, nil
}
