// Package leases owns allot's etcd keyspace: it is the only code that writes
// the keys scrapers, the rebalancer and the discoverer coordinate through.
//
// A process holds one [Session], a lease it renews itself so that it always
// knows a local deadline before which the server cannot have expired the
// lease. Everything a process writes lives on its session's lease:
//
//   - [Register] puts members/<id>, which [ListMembers] and [WatchMembers] read;
//   - [Claims] claims and releases targets in batched transactions, takes over
//     moved targets and reports claim deletions and moves ([Claims.Watch]);
//   - [StartMove], [AbortMove] and [ListMoves] are the rebalancer's side of a
//     move; [Claims.TakeOver] is the destination's;
//   - [PutLoad] and [ListLoads] carry load reports to the rebalancer, whose
//     leader follows them with [WatchLoads] instead of reading them again.
//
// Drain marks (drain/<id>, no lease: they outlive restarts) are written by
// the rebalancer and followed by scrapers with [WatchDrains].
//
// A claim's epoch is the ModRevision of its key. It changes whenever the
// claim changes hands and is used as a fencing token: releases and moves are
// guarded by it, so a stale holder can never undo a newer owner's claim.
//
// See README.md for the key layout, the TTLs and the claim protocol.
package leases
