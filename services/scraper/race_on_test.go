//go:build race

package scraper

// slowdown scales latency bounds: under the race detector the in-process
// etcd, NATS and scrape loops run several times slower than in production,
// so a bound of d in production is checked as d×slowdown.
const slowdown = 2
