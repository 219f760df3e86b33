package leases

import (
	"context"
	"log/slog"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchDrains sends the set of scrapers marked for draining (every key
// under [Keyspace.Drains], whatever its value) first and then after every
// change, with the same guarantees as [WatchMembers]: a slow receiver gets
// the latest set, an unchanged set is not sent again, the watch restarts
// from a fresh listing after it fails, and the channel is closed when ctx
// ends. The rebalancer writes and deletes the marks; scrapers watch them so
// that a drained scraper claims nothing it would only have to give up.
func WatchDrains(ctx context.Context, cli *clientv3.Client, ks Keyspace, logger *slog.Logger) <-chan map[string]bool {
	return watchKeys(ctx, cli, keyWatch[struct{}, map[string]bool]{
		prefix: ks.Drains(),
		what:   "drain mark",
		// The key is the mark; the value only says who asked and when.
		decode: func(*mvccpb.KeyValue) (struct{}, error) { return struct{}{}, nil },
		equal:  func(struct{}, struct{}) bool { return true },
		view: func(cur map[string]struct{}) map[string]bool {
			out := make(map[string]bool, len(cur))
			for id := range cur {
				out[id] = true
			}
			return out
		},
	}, logger)
}
