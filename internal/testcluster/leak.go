package testcluster

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// VerifyTestMain runs m's tests and then fails the binary if a goroutine
// whose stack names any of owners (a package path or function prefix, such
// as "prometheus/prometheus/scrape.") is still running 10 seconds later.
// Unlike goleak's, it checks only the code named: the embedded servers keep
// goroutines of their own, which are not the tests' to end.
func VerifyTestMain(m *testing.M, owners ...string) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			leaked := leakedGoroutines(owners)
			if len(leaked) == 0 {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", strings.Join(leaked, "\n\n"))
				code = 1
				break
			}
			time.Sleep(50 * time.Millisecond) // polling for goroutines to exit
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of the goroutines that name any of
// owners.
func leakedGoroutines(owners []string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, owner := range owners {
			if strings.Contains(g, owner) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
