// Package otlp converts the samples of Prometheus scrapes into OpenTelemetry
// metrics (go.opentelemetry.io/collector/pdata).
//
// Appendable is a storage.AppendableV2 for Prometheus's scrape manager. The
// manager opens one appender per scrape of one target; everything appended to
// it becomes one pmetric.Metrics on Commit, which is handed to a Consumer (an
// exporter). A Consumer that is an EncodedConsumer accepting encoded scrapes
// gets the same metrics as OTLP protobuf instead, written straight from the
// samples with per-series state kept in a table indexed by the scrape loop's
// series references (fast.go, series.go). The conversion follows the OpenTelemetry Collector's prometheus
// receiver where that receiver is right, and is stricter where it is lossy;
// docs/conversion.md has the table.
//
// Conversion is stateful per target: a cumulative point without a start
// timestamp from the scrape gets the timestamp of the series' first
// observation, and a decreasing value is taken as a reset (start = t − 1 ms),
// exactly as the OpenTelemetry "true reset point" rule describes. That state
// lives in the Appendable, keyed by TargetHash, until Forget.
//
// The scrape manager must be built with AppendMetadata (types, units and help
// arrive with every sample) and PassMetadataInContext (the target arrives in
// the appender's context); ScrapeOptions sets both, and ParseST so created
// timestamps arrive as start timestamps.
package otlp
