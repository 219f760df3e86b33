package export

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Exporter sends metrics somewhere. It satisfies otlp.Consumer.
// ConsumeMetrics takes ownership of md and does not block on the backend;
// Shutdown stops the exporter, delivering what it can before ctx ends.
type Exporter interface {
	ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error
	Shutdown(ctx context.Context) error
}

// Errors of ConsumeMetrics.
var (
	ErrQueueFull = errors.New("export: queue full")
	ErrShutdown  = errors.New("export: exporter shut down")
)

// sendError classifies a failed send. A retryable error is tried again after
// backoff (or after the backend's Retry-After); any other error drops the
// batch with reason.
type sendError struct {
	err        error
	retryable  bool
	retryAfter time.Duration
	reason     string
	// partial is the number of points a backend refused in an otherwise
	// accepted request (OTLP partial success).
	partial int
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

func retryable(err error, after time.Duration) error {
	return &sendError{err: err, retryable: true, retryAfter: after}
}

func permanent(err error, reason string) error {
	return &sendError{err: err, reason: reason}
}

// classifyHTTP turns a non-2xx response into a sendError: 429 and 5xx are
// retried (honouring Retry-After), other statuses drop the batch.
func classifyHTTP(resp *http.Response, body []byte) error {
	err := fmt.Errorf("HTTP %s: %s", resp.Status, truncate(body, 256))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return retryable(err, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()))
	default:
		return permanent(err, "http_"+strconv.Itoa(resp.StatusCode))
	}
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// partialSuccess reports points the backend accepted the request but
// refused (OTLP ExportPartialSuccess); they are counted dropped.
func partialSuccess(rejected int64, msg string) error {
	return &sendError{err: fmt.Errorf("backend rejected %d points: %s", rejected, msg), partial: int(rejected), reason: reasonPartial}
}
