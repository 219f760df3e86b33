// Package export sends converted scrapes (pmetric.Metrics, or OTLP requests
// already encoded by pkg/otlp, which the OTLP exporters send as they are and
// concatenate into batches) to backends: OTLP over HTTP and gRPC,
// Prometheus remote write (1.0 or 2.0), and a Prometheus pull endpoint,
// several at once.
//
// Every push exporter is a pipeline: ConsumeMetrics puts the scrape on a
// bounded queue (in memory, or on disk so that a restart loses nothing) and
// returns at once; one sender goroutine per exporter takes batches off the
// queue (by size and time), sends them, and retries failures that may pass
// (connection errors, 429, 5xx) with exponential backoff and jitter,
// honouring Retry-After. A batch the backend rejects for good (another 4xx)
// is dropped and counted. One sender keeps the samples of each series in
// order. Shutdown stops accepting, drains what it can by its deadline and
// stops the sender.
package export
