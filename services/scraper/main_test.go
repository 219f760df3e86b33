package scraper

import (
	"testing"

	"github.com/allot-dev/allot/internal/testcluster"
)

// TestMain fails the package if a goroutine of a Scraper or of its scrape
// manager outlives the tests: Run must end everything it started. The
// embedded servers' goroutines are not checked; they are not ours.
func TestMain(m *testing.M) {
	testcluster.VerifyTestMain(m, "services/scraper.(*Scraper)", "prometheus/prometheus/scrape.")
}
