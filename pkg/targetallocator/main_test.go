package targetallocator

import (
	"testing"

	commoncfg "github.com/prometheus/common/config"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The discoverer turns this on for the whole process (it publishes job
	// configs with their secrets); the API must redact regardless.
	commoncfg.MarshalSecretValue = true
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
