package events

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Config names the two KV buckets and how they are replicated.
type Config struct {
	// JobsBucket holds one Job per scrape job. Default "allot_jobs".
	JobsBucket string `yaml:"jobs_bucket"`
	// TargetsBucket holds one Target per target. Default "allot_targets".
	TargetsBucket string `yaml:"targets_bucket"`
	// Replicas is the JetStream replica count of both buckets: 1 on a
	// single server, 3 in a NATS cluster. Default 1.
	Replicas int `yaml:"replicas"`
}

const (
	defaultJobsBucket    = "allot_jobs"
	defaultTargetsBucket = "allot_targets"
)

// RegisterFlags registers --events.jobs-bucket, --events.targets-bucket and
// --events.replicas with their defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.JobsBucket, "events.jobs-bucket", defaultJobsBucket, "JetStream KV bucket holding the scrape jobs.")
	f.StringVar(&c.TargetsBucket, "events.targets-bucket", defaultTargetsBucket, "JetStream KV bucket holding the targets.")
	f.IntVar(&c.Replicas, "events.replicas", 1, "Replicas of the events KV buckets (3 in a NATS cluster).")
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.JobsBucket == c.TargetsBucket {
		return fmt.Errorf("events: jobs and targets bucket are both %q", c.JobsBucket)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("events: replicas %d not in 1..5", c.Replicas)
	}
	return nil
}

// withDefaults fills zero fields, so a zero Config works in tests and
// library use without flags.
func (c Config) withDefaults() Config {
	if c.JobsBucket == "" {
		c.JobsBucket = defaultJobsBucket
	}
	if c.TargetsBucket == "" {
		c.TargetsBucket = defaultTargetsBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

func (c Config) jobsKV() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      c.JobsBucket,
		Description: "allot scrape jobs (events.Job)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}
}

func (c Config) targetsKV() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      c.TargetsBucket,
		Description: "allot scrape targets (events.Target), keyed s<slot>.<id>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}
}

// Buckets creates or updates both KV buckets (history 1, file storage) and
// returns them. Only the discoverer calls it; followers open the buckets and
// create them only if missing (see openBucket), so that they never fight
// over the configuration.
func Buckets(ctx context.Context, js jetstream.JetStream, cfg Config) (jobs, targets jetstream.KeyValue, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	jobs, err = js.CreateOrUpdateKeyValue(ctx, cfg.jobsKV())
	if err != nil {
		return nil, nil, fmt.Errorf("events: bucket %s: %w", cfg.JobsBucket, err)
	}
	targets, err = js.CreateOrUpdateKeyValue(ctx, cfg.targetsKV())
	if err != nil {
		return nil, nil, fmt.Errorf("events: bucket %s: %w", cfg.TargetsBucket, err)
	}
	return jobs, targets, nil
}

// openBucket binds to a bucket, creating it if it does not exist yet, so a
// scraper started before the discoverer can follow an empty catalog.
func openBucket(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, kc.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, kc)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, kc.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("events: bucket %s: %w", kc.Bucket, err)
	}
	return kv, nil
}
