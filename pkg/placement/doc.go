// Package placement decides which scraper should own what, as pure,
// deterministic functions over a snapshot of the members.
//
// The preferred owner of a key (a target or a slot) is chosen by weighted
// rendezvous hashing: every member scores the key, the highest score wins.
// Adding a member moves only the keys it now wins (about 1/(N+1) of them);
// removing one moves only the keys it held, spread over all the others.
// [Score], [Preferred] and [Rank] answer one query; a [Ranker] answers many
// over the same members much faster, with the same results. [RankZones]
// ranks with zone diversity.
//
// Zone awareness (PlanConfig.ZoneAware, off by default) keeps a target
// whose Zone has members on those members. Scrapers and rebalancer agree on
// it by construction: a zone-aware scraper claims a target of such a zone
// when it is the target's preferred member within the zone (rendezvous
// order restricted to a subset is the full order filtered), and any other
// target when it is RankZones' first, which is Preferred; Plan places and
// brings targets home by the same preference.
//
// The rebalancer plans over a [Cluster] (members, targets with their load
// and owner, moves in flight): [Plan] places unowned targets, empties
// draining members and evens out the load by series with as few moves as it
// can, never moving a target so that its destination ends busier than its
// source, so that plans converge and do not oscillate. [Measure] describes
// the balance and [Recommend] the number of scrapers the load needs.
//
// Nothing here talks to etcd: scrapers and the rebalancer call these
// functions and apply the results themselves. The simulation in ./sim
// compares Plan with the OpenTelemetry Target Allocator's strategies.
package placement
