// Package scraper is allot's scraping process: it holds an etcd session,
// follows its share of the target catalog, claims targets, scrapes the ones
// it owns with Prometheus's own scrape engine and hands the samples on
// through an ownership gate.
//
// # Life of a [Scraper]
//
// [Scraper.Run] opens a [leases.Session] and registers the scraper as a
// member. From the live member set it computes, for every catalog slot, the
// rendezvous ranking over members (placement.Rank of "slot-<n>"), and
// follows the slots where it is first or second choice. A target of a
// followed slot that nobody owns is claimed at once by the first choice and
// after [Config.ClaimGrace] by the second. A claim deleted in etcd (the
// owner's lease expired or was revoked) is a failover: the ranking is
// recomputed without the previous owner and the new first choice claims.
//
// Owned targets feed one scrape.Manager, one target group per target,
// labelled with the reserved label __allot_target_id__. Every scrape's batch
// passes the gate (gate.go) on Commit: it is forwarded only while the target
// is owned and the session is alive, so no sample of a target this scraper
// no longer owns reaches the sink (fencing). When the session is lost the
// gate shuts at once, every scrape loop stops without end-of-run staleness
// markers (someone else continues the series), and a new session claims
// again. A target deleted from the catalog is released and stopped with
// staleness markers. Moves (the rebalancer's protocol) are handled on both
// sides: the destination prepares, takes over, then forwards; the source
// stops without staleness markers once the claim is no longer its own.
//
// A graceful stop shuts the gate, revokes the lease (so the others claim at
// once) and only then winds the scrape loops down; a crash is seen by the
// others when the lease expires, a TTL later.
//
// All state changes run on one actor goroutine (actor.go); etcd
// transactions run on a worker goroutine beside it, so a slow etcd never
// stalls the reaction to catalog or membership changes.
package scraper
