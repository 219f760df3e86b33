// Package component holds allot's end-to-end component tests: the real
// services (discoverer, scrapers, rebalancer) wired together in one process
// over an embedded etcd and an embedded NATS on random loopback ports, with
// real scrape loops against httptest targets. Every scraper converts its
// samples with pkg/otlp into one shared pkg/sink, which records every sample
// per series, and the tests assert on what arrived: at most one missing or
// duplicated sample per moved target, failover within the lease TTL, a
// catalog that neither loses nor duplicates targets when the discoverer
// leader dies. Where a rebalancer leader or a scraper is killed mid-plan,
// a claim history (an etcd watch of claims/ and moves/) says what moved,
// and an ownership monitor samples claims and the scrapers' own views
// throughout: no target owned twice or left unserved past the bounds.
//
// The tests need no Docker and no build tag:
//
//	go test -race ./test/component/
//
// BenchmarkScraperMemoryPerTarget measures what each of 20 in-process
// scrapers takes in and holds for a 100k-target catalog:
//
//	go test -run XXX -bench BenchmarkScraperMemoryPerTarget -benchtime=1x ./test/component/
package component
