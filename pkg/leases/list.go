package leases

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// pageSize bounds one Get when listing a prefix, so that listing 800k
// claims never asks etcd for one huge response.
const pageSize = 10000

// scanPrefix calls fn for every key under prefix, in key order, as of one
// revision, reading pageSize keys per request. If that revision is compacted
// while paging, it calls reset and starts again at a newer revision.
// It returns the revision read.
func scanPrefix(ctx context.Context, cli *clientv3.Client, prefix string, reset func(), fn func(*mvccpb.KeyValue) error) (int64, error) {
	return scanPrefixPaged(ctx, cli, prefix, pageSize, reset, fn)
}

func scanPrefixPaged(ctx context.Context, cli *clientv3.Client, prefix string, page int64, reset func(), fn func(*mvccpb.KeyValue) error) (int64, error) {
	const attempts = 3
	var err error
	for range attempts {
		var rev int64
		rev, err = scanOnce(ctx, cli, prefix, page, fn)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, rpctypes.ErrCompacted) {
			return 0, err
		}
		reset()
	}
	return 0, err
}

func scanOnce(ctx context.Context, cli *clientv3.Client, prefix string, page int64, fn func(*mvccpb.KeyValue) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
