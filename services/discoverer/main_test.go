package discoverer

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives the tests: Run must
// stop every SD provider, the election and the publisher it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
