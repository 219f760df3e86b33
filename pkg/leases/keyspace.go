package leases

import "strings"

// DefaultPrefix is where allot keeps its keys unless told otherwise.
const DefaultPrefix = "/allot/"

// Keyspace builds allot's etcd keys under Prefix. The zero value uses
// [DefaultPrefix]; a prefix without a trailing slash gets one, so "/a" and
// "/a/" name the same keyspace.
type Keyspace struct {
	Prefix string
}

// NewKeyspace returns a Keyspace with its prefix normalised.
func NewKeyspace(prefix string) Keyspace {
	return Keyspace{Prefix: normalisePrefix(prefix)}
}

func normalisePrefix(p string) string {
	if p == "" {
		return DefaultPrefix
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

func (k Keyspace) prefix() string { return normalisePrefix(k.Prefix) }

// Members is the prefix of every member key: "<prefix>members/".
func (k Keyspace) Members() string { return k.prefix() + "members/" }

// Member is the key of member id.
func (k Keyspace) Member(id string) string { return k.Members() + id }

// Claims is the prefix of every claim key: "<prefix>claims/".
func (k Keyspace) Claims() string { return k.prefix() + "claims/" }

// Claim is the key of target's claim.
func (k Keyspace) Claim(target string) string { return k.Claims() + target }

// Moves is the prefix of every move key: "<prefix>moves/".
func (k Keyspace) Moves() string { return k.prefix() + "moves/" }

// Move is the key of a move of target.
func (k Keyspace) Move(target string) string { return k.Moves() + target }

// Loads is the prefix of every load report: "<prefix>load/".
func (k Keyspace) Loads() string { return k.prefix() + "load/" }

// Load is the key of scraper id's load report.
func (k Keyspace) Load(id string) string { return k.Loads() + id }

// Drains is the prefix of every drain mark: "<prefix>drain/". A mark has no
// lease: it outlives the process that wrote it.
func (k Keyspace) Drains() string { return k.prefix() + "drain/" }

// Drain is the drain mark of scraper id.
func (k Keyspace) Drain(id string) string { return k.Drains() + id }

// Election is the prefix for a concurrency.Election called name:
// "<prefix>election/<name>" (the election adds its own "/").
func (k Keyspace) Election(name string) string { return k.prefix() + "election/" + name }
