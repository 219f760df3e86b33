// Package placement decides which scraper should own what, as pure,
// deterministic functions over a snapshot of the members.
//
// The preferred owner of a key (a target or a slot) is chosen by weighted
// rendezvous hashing: every member scores the key, the highest score wins.
// Adding a member moves only the keys it now wins (about 1/(N+1) of them);
// removing one moves only the keys it held, spread over all the others.
// Nothing here talks to etcd: scrapers and the rebalancer call these
// functions and apply the results themselves.
package placement
