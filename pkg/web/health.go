package web

import (
	"fmt"
	"net/http"
	"strings"
)

// Readiness reports which parts of the process are not ready yet; an empty
// answer means ready.
type Readiness func() []string

// Healthy serves /-/healthy: the process is up and serving HTTP.
func Healthy() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "allot is healthy.")
	})
}

// Ready serves /-/ready: 200 once every part is ready, else 503 naming the
// parts that are not, as Mimir's /ready does.
func Ready(check Readiness) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if waiting := check(); len(waiting) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", strings.Join(waiting, ", "))
			return
		}
		fmt.Fprintln(w, "allot is ready.")
	})
}
