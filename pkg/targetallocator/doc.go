// Package targetallocator serves the OpenTelemetry Operator Target
// Allocator's HTTP API over allot's catalog and claims, so that unchanged
// OTel Collectors (prometheus receiver with target_allocator: {endpoint,
// interval, collector_id}) take a share of the targets next to allot's own
// scrapers, or instead of them.
//
// An [API] follows the whole catalog (package events, every slot) and
// serves its jobs as /scrape_configs and its targets as
// /jobs/{job}/targets, with the Target Allocator's paths and JSON shapes.
// A collector becomes a member of the pool by polling: its first poll with
// a collector_id opens a lease (a leases.Session, TTL
// Config.CollectorTTL) held by this process on the collector's behalf,
// registers leases.Member{Kind: KindCollector} on it, and every later poll
// keeps it. The API claims targets for its collectors on their leases
// (the unowned targets whose slot's preferred owner over all live members
// is the collector, and after a grace period the ones nobody else claimed)
// and completes the rebalancer's moves to them (Claims.TakeOver). A
// collector's answers are the targets whose claim it owns. When a
// collector's polls stop for CollectorTTL the API revokes its lease: its
// member entry and claims vanish at once, and scrapers or other
// collectors take its targets.
//
// The API never answers in a way the Collector would read as "drop every
// job": see [API.Handler] and docs/target-allocator.md.
package targetallocator
