package rebalancer

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// rebalancer, simulated scraper and etcd is stopped by its test's cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The gRPC and etcd client keep a few process-wide goroutines.
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
