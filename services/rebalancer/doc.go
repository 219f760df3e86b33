// Package rebalancer evens out the scrapers' load by moving target claims
// between them, and drains scrapers on request.
//
// Any number of [Rebalancer] replicas run; they campaign in one etcd
// election (Keyspace.Election("rebalancer")) and the leader does the work.
// The leader mirrors members, claims and drain marks through etcd watches,
// reads the scrapers' load reports (per-target series) and, every
// Config.Interval or soon after a member or drain change, measures the
// balance with [placement.Measure]. When the busiest scraper carries more
// than mean × (1 + Tolerance) series, or a draining scraper still owns
// targets, and the previous plan has fully finished, it asks
// [placement.Plan] for moves and starts them with [leases.StartMove]: at
// most MovesPerSecond, at most MaxConcurrentMoves pending at once, each
// guarded by the claim's epoch. The destination scraper completes a move
// with one transaction (Claims.TakeOver); a move not completed by its
// deadline (MoveTimeout) is aborted and the target stays with its source.
//
// Moves live on the leader's lease, so they end with its leadership; see
// [Rebalancer.Run] for why a leader change then needs no rollback.
//
// Drain marks are kept at <prefix>drain/<scraper> ([DrainKey]) so that
// every replica sees them. [Rebalancer.Handler] serves the drain API and
// the cluster status ([Status]) as JSON.
package rebalancer
