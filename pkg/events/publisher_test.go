package events

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestPublisherSnapshot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	pub, err := NewPublisher(ctx, e.js, Config{}, reg, nil)
	require.NoError(t, err)

	s, err := pub.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, s.Jobs)
	require.Empty(t, s.Targets)

	node := NewJob("node", "job_name: node\n")
	require.NoError(t, pub.PutJob(ctx, node))
	require.NoError(t, pub.PutJob(ctx, NewJob("gone", "x")))
	require.NoError(t, pub.DeleteJob(ctx, "gone"))
	ts := targets("node", 0, 50)
	require.NoError(t, pub.PutTargets(ctx, ts))
	require.NoError(t, pub.DeleteTargets(ctx, ids(ts[40:])))
	changed := ts[0]
	changed.ConfigHash = "h2"
	require.NoError(t, pub.PutTargets(ctx, []Target{changed}))

	// Values not written by a Publisher.
	jobs, err := e.js.KeyValue(ctx, defaultJobsBucket)
	require.NoError(t, err)
	_, err = jobs.Put(ctx, JobKey("broken"), []byte("{"))
	require.NoError(t, err)
	kv, err := e.js.KeyValue(ctx, defaultTargetsBucket)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "s0000.nothex", []byte("{}"))
	require.NoError(t, err)

	s, err = pub.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"node": node.Hash, "broken": ""}, s.Jobs)
	require.Len(t, s.Targets, 40)
	for i, tg := range ts[:40] {
		if i == 0 {
			tg = changed
		}
		b, err := EncodeTarget(tg)
		require.NoError(t, err)
		require.Equal(t, ValueHash(b), s.Targets[tg.ID], "target %d", i)
	}
	b, _ := EncodeTarget(ts[0])
	require.NotEqual(t, ValueHash(b), s.Targets[ts[0].ID], "old value hashes differently")
	require.Equal(t, []string{"s0000.nothex"}, s.Stray)

	require.Equal(t, 51.0, testutil.ToFloat64(pub.m.published.WithLabelValues(bucketTargets, opPut)))
	require.Equal(t, 10.0, testutil.ToFloat64(pub.m.published.WithLabelValues(bucketTargets, opDelete)))
	require.Equal(t, 2.0, testutil.ToFloat64(pub.m.published.WithLabelValues(bucketJobs, opPut)))
	require.Equal(t, 1.0, testutil.ToFloat64(pub.m.published.WithLabelValues(bucketJobs, opDelete)))
}

func TestPublisherRejectsInvalid(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bad := target("node", 1)
	bad.V = 0
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"invalid target in batch", func() error { return e.pub.PutTargets(ctx, []Target{target("node", 0), bad}) }},
		{"invalid id", func() error { return e.pub.DeleteTargets(ctx, []string{"ABC"}) }},
		{"invalid job", func() error { return e.pub.PutJob(ctx, Job{V: 1, Name: "x"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.do())
		})
	}
	s, err := e.pub.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, s.Targets, "nothing of a rejected batch is published")
	require.Empty(t, s.Jobs)

	// The publisher reports a dead connection instead of hanging.
	e.pub.ackTimeout = 500 * time.Millisecond
	e.n.Close()
	require.Error(t, e.pub.PutTargets(ctx, targets("node", 0, 10)))
}
