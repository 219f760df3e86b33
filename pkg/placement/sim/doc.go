// Command sim compares allot's placement with the OpenTelemetry Target
// Allocator's strategies on the same simulated targets, without a network.
//
// For every number of targets and of scrapers it places the targets, then
// adds one scraper (N → N+1) and, from the initial placement again, removes
// one (N → N−1), and reports for each strategy the fraction of targets that
// changed owner, the busiest scraper's load over the mean (by series and by
// target count), the number of scrapers left without targets, and the time
// the strategy took to compute the placement.
//
// The strategies:
//
//   - allot: every target starts on its rendezvous-preferred scraper
//     (placement.Ranker), then placement.Plan balances; on a scaling event
//     only Plan runs (the departed scraper's targets are its orphans).
//   - ta-consistent-hashing: the Target Allocator's consistent-hashing
//     strategy as it is: github.com/buraksezer/consistent with 1061
//     partitions, replication factor 5, load 1.1 and xxhash, keyed by the
//     target's address, rebuilt from the member list on every change.
//   - ta-least-weighted: the Target Allocator's least-weighted strategy: a
//     new target goes to the collector with the fewest targets (ties: fewer
//     of the same job, then the name); on removal a collector's targets are
//     reassigned the same way; on addition nothing moves.
//   - hash-mod-n: xxhash(address) mod N.
//
// Per-target series are drawn from a Zipf distribution with a fixed seed.
// Run it as
//
//	go run ./pkg/placement/sim -targets=100000,800000 -scrapers=10,100,1000
//
// which prints markdown tables; the same runs are the sub-benchmarks of
// BenchmarkPlacement, which report the figures as metrics.
package main
