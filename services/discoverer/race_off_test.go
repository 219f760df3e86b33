//go:build !race

package discoverer

const raceEnabled = false
