// Package discoverer finds scrape targets with Prometheus service discovery,
// relabels them, and publishes the resulting catalog of jobs and targets to
// JetStream KV (package events) for the scrapers.
//
// A [Discoverer] runs a discovery.Manager over the scrape_configs of a
// Prometheus config ([Discoverer.ApplyConfig]), applies each job's
// relabel_configs itself (scrape.PopulateLabels), and gives every kept
// target its stable ID (events.TargetID of the job and the final labels).
// Dropped targets are never published but are listed by
// [Discoverer.Targets] with the reason.
//
// # Cost of a change
//
// A change costs what changed, not the catalog: updates are taken from each
// SD provider as it sends them (see tap), so a Kubernetes pod that changes
// costs the relabelling of that pod's group and one event, whatever the
// number of other targets. Groups are kept per (provider, source), targets
// per ID with a reference count, so a target reported by two groups or
// moving between providers on a reload is published once and never
// deleted and re-added. Changes are recorded as "this job or target ID
// changed" and resolved to the current state when published, so a burst of
// changes to one target costs one event.
//
// # Leadership
//
// Several discoverers may run; one is leader through a
// concurrency.Election at Keyspace.Election("discoverer"), and only it
// publishes. The others run discovery and relabelling as hot standbys.
// A new leader first compares the buckets with its catalog
// (Publisher.Snapshot, comparing value hashes) and fixes every difference,
// then publishes changes as they come. Because that comparison deletes
// whatever the catalog lacks, it waits until discovery has settled: every
// SD provider has reported and nothing has changed for a moment, or
// Config.SyncTimeout has passed since the first config. A standby that
// takes over has settled long before; a restarted discoverer does not
// delete targets its SDs have not found again yet. Likewise, when a reload
// replaces a job's SD provider, the old one's targets stay until the new
// one has reported, so targets both find are never deleted and put again. Losing the election session cancels
// any publish in flight and the discoverer campaigns again. A publish
// failure (NATS down) is retried with backoff and followed by a full
// reconciliation, as is a NATS reconnection.
//
// # Published job configs and secrets
//
// Each job is published as its scrape_config in YAML, without its SD
// configs and relabel_configs (applied here). Scrapers need the job's
// real credentials (basic_auth passwords, bearer tokens, OAuth2 secrets),
// so [New] sets github.com/prometheus/common/config.MarshalSecretValue to
// true. That switch is process-wide: in a process running a discoverer,
// every marshalled Prometheus config shows its secrets, so do not serve
// a marshalled config (e.g. a /api/v1/status/config page) from such a
// process without redacting it. Anyone who can read the allot_jobs bucket
// can read those secrets: protect NATS accordingly.
package discoverer
