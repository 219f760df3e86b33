package component

import (
	"testing"

	"github.com/allot-dev/allot/internal/testcluster"
)

// TestMain fails the package if a goroutine of allot's services or of the
// Prometheus scrape and discovery engines outlives the tests: every Run
// must end what it started, crashed or cut off members included. The
// embedded servers' goroutines are not checked; they are not ours.
func TestMain(m *testing.M) {
	testcluster.VerifyTestMain(m,
		"allot/services/",
		"prometheus/prometheus/scrape.",
		"prometheus/prometheus/discovery.",
		"prometheus/prometheus/discovery/",
	)
}
