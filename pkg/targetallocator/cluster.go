package targetallocator

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/web"
)

// ClusterStore reads from etcd what the /cluster page of a process without
// a rebalancer leader cannot get from load reports: the collectors' targets
// (collectors send no load reports; their claims say what they own) and the
// moves in progress (moves/ keys). It implements web.ClusterStore; each
// call reads etcd afresh, so it serves page views, not periodic polling.
type ClusterStore struct {
	Client   *clientv3.Client
	Keyspace leases.Keyspace
}

var _ web.ClusterStore = ClusterStore{}

// ClaimCounts counts the claims per owner.
func (s ClusterStore) ClaimCounts(ctx context.Context) (map[string]int, error) {
	claims, _, err := leases.ListClaims(ctx, s.Client, s.Keyspace)
	if err != nil {
		return nil, fmt.Errorf("list claims: %w", err)
	}
	counts := map[string]int{}
	for _, cl := range claims {
		counts[cl.Owner]++
	}
	return counts, nil
}

// PendingMoves lists the moves in progress, sorted by target.
func (s ClusterStore) PendingMoves(ctx context.Context) ([]web.ClusterMove, error) {
	moves, err := leases.ListMoves(ctx, s.Client, s.Keyspace)
	if err != nil {
		return nil, fmt.Errorf("list moves: %w", err)
	}
	now := time.Now()
	out := make([]web.ClusterMove, 0, len(moves))
	for _, m := range moves {
		out = append(out, web.ClusterMove{
			Time: now, Target: m.Target, From: m.From, To: m.To, Reason: m.Reason,
			Outcome: web.MoveInProgress, Deadline: m.Deadline,
		})
	}
	return out, nil
}
