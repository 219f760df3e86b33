//go:build unix

package placement

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the test process has used (all threads, GC
// included); on a shared machine it measures a benchmark better than the
// wall clock.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
