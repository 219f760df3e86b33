//go:build !race

package scraper

// slowdown scales latency bounds; see race_on_test.go.
const slowdown = 1
