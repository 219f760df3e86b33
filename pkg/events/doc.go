// Package events is the target and job catalog, carried by two NATS
// JetStream KV buckets: allot_jobs (one [Job] per scrape job) and
// allot_targets (one [Target] per target, keyed "s<slot>.<id>").
//
// The discoverer leader writes it with a [Publisher]: only differences
// against what the buckets hold ([Publisher.Snapshot] lists that for a new
// leader), many at a time with pipelined async publishes, so a change costs
// in proportion to its size, not to the catalog.
//
// A scraper reads it with a [Follower]: all jobs, the targets of the slots
// it follows ([Follower.SetSlots]) and single targets it owns elsewhere
// ([Follower.Track]), delivered in order to its [Handler] as a snapshot
// followed by every later change, with no gap between the two. A target's
// slot ([SlotOf]) comes from its id ([TargetID]), a hash of its job and
// final labels, so every process agrees on it.
//
// Every value carries a schema version ([Version]) and is validated on
// receipt ([DecodeTarget], [DecodeJob]); an invalid one is counted and
// skipped, and never removes what the follower knew.
//
// README.md describes the subjects, buckets and delivery guarantees.
package events
