package promcr

import (
	"testing"

	commoncfg "github.com/prometheus/common/config"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Golden files show secrets in clear: that they were read from the
	// API is what they test. Process-wide, as in the discoverer.
	commoncfg.MarshalSecretValue = true
	goleak.VerifyTestMain(m)
}
