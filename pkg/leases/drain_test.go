package leases

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDrainKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix, want string
	}{
		{"", "/allot/drain/"},
		{"/x", "/x/drain/"},
		{"/a/b/", "/a/b/drain/"},
	} {
		for _, ks := range []Keyspace{{Prefix: tc.prefix}, NewKeyspace(tc.prefix)} {
			require.Equal(t, tc.want, ks.Drains())
			require.Equal(t, tc.want+"s1", ks.Drain("s1"))
		}
	}
}

func TestWatchDrains(t *testing.T) {
	t.Parallel()
	te := startEtcd(t)
	ks := NewKeyspace("/d")
	ctx := testCtx(t)
	put := func(key string) func() error {
		return func() error { _, err := te.cli.Put(ctx, key, `{"by":"test"}`); return err }
	}
	del := func(key string) func() error {
		return func() error { _, err := te.cli.Delete(ctx, key); return err }
	}
	// A mark written before the watch starts comes with the first set.
	require.NoError(t, put(ks.Drain("early"))())

	wctx, cancel := context.WithCancel(ctx)
	sets := WatchDrains(wctx, te.cli, ks, nil)
	next := func() map[string]bool {
		t.Helper()
		select {
		case got, ok := <-sets:
			require.True(t, ok, "closed early")
			return got
		case <-time.After(5 * time.Second):
			t.Fatal("no drain set within 5s")
			return nil
		}
	}
	require.Equal(t, map[string]bool{"early": true}, next())

	// In each step only the last operation changes the set, so the next set
	// received must be want: one sent for a change that changes nothing
	// would show up instead.
	for _, step := range []struct {
		name string
		ops  []func() error
		want map[string]bool
	}{
		{"mark added", []func() error{put(ks.Drain("a"))}, map[string]bool{"early": true, "a": true}},
		{"mark removed", []func() error{del(ks.Drain("early"))}, map[string]bool{"a": true}},
		{
			"rewritten mark and keys outside drain/ change nothing",
			[]func() error{
				put(ks.Drain("a")),
				put(ks.Member("b")),
				put(NewKeyspace("/other").Drain("b")),
				put(ks.Drains()[:len(ks.Drains())-1] + "age/b"), // "/d/drainage/b"
				del(ks.Drain("nobody")),
				put(ks.Drain("b")),
			},
			map[string]bool{"a": true, "b": true},
		},
		{"last but one removed", []func() error{del(ks.Drain("a"))}, map[string]bool{"b": true}},
		{"last removed", []func() error{del(ks.Drain("b"))}, map[string]bool{}},
		{"marked again", []func() error{put(ks.Drain("a"))}, map[string]bool{"a": true}},
	} {
		t.Run(step.name, func(t *testing.T) {
			for _, op := range step.ops {
				require.NoError(t, op())
			}
			require.Equal(t, step.want, next())
		})
	}

	cancel()
	for range sets { // drains, then ends when the goroutine closes it
	}
}
