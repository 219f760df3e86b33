package export

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countingHandler is a slog handler that keeps the records.
type countingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func TestDropLogOncePerBurst(t *testing.T) {
	h := &countingHandler{}
	logger := slog.New(h)
	var d dropLog
	for range 100 {
		d.note(logger, "http_400", errors.New("bad"))
	}
	require.Len(t, h.records, 1, "one line for a burst of drops")

	// After a quiet minute, the next drop is logged with the count of the
	// ones not logged.
	d.mu.Lock()
	d.last = d.last.Add(-2 * dropBurst)
	d.mu.Unlock()
	d.note(logger, "http_400", errors.New("bad"))
	require.Len(t, h.records, 2)
	var suppressed int64
	h.records[1].Attrs(func(a slog.Attr) bool {
		if a.Key == "dropped_since_last_log" {
			suppressed = a.Value.Int64()
		}
		return true
	})
	require.Equal(t, int64(99), suppressed)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, 7*time.Second, parseRetryAfter("7", now))
	require.Equal(t, 30*time.Second, parseRetryAfter(now.Add(30*time.Second).Format(http.TimeFormat), now))
	require.Zero(t, parseRetryAfter("", now))
	require.Zero(t, parseRetryAfter("soon", now))
	require.Zero(t, parseRetryAfter(now.Add(-time.Minute).Format(http.TimeFormat), now))
}
