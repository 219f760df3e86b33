package targetallocator

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/web"
)

// TestClusterStoreShowsCollectorsAndMoves serves /api/v1/cluster as a
// discoverer without a rebalancer does (members and load reports only),
// completed by ClusterStore: the collectors' targets come from their
// claims and a move in progress from moves/.
func TestClusterStoreShowsCollectorsAndMoves(t *testing.T) {
	e := newEnv(t)
	want := e.publish(t, 10, jobNames...)
	_, srv := e.start(t, Config{Settle: time.Second})
	cs := []*otelCollector{newCollector(srv.URL, "collector-0", nil), newCollector(srv.URL, "collector-1", nil)}
	pollAll(t, cs...)
	ok, why := coverage(want, cs...)
	require.True(t, ok, why)

	// The view cmd/allot builds without a rebalancer: members, and what
	// their load reports say (collectors send none).
	src := web.ClusterSourceFunc(func(ctx context.Context) (web.Cluster, error) {
		members, _, err := leases.ListMembers(ctx, e.etcd, e.ks)
		if err != nil {
			return web.Cluster{}, err
		}
		var c web.Cluster
		for _, m := range members {
			c.Members = append(c.Members, web.ClusterMember{ID: m.ID, Kind: m.Kind, Addr: m.Addr, Weight: m.Weight})
		}
		return c, nil
	})
	h := web.ClusterAPI(web.WithStore(src, ClusterStore{Client: e.etcd, Keyspace: e.ks}))
	type view struct {
		Targets int `json:"targets"`
		Pending int `json:"pending_moves"`
		Members []struct {
			ID      string `json:"id"`
			Kind    string `json:"kind"`
			Targets int    `json:"targets"`
		} `json:"scrapers"`
		Moves []web.ClusterMove `json:"recent_moves"`
	}
	read := func() view {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/cluster", nil))
		require.Equal(t, 200, rec.Code, rec.Body.String())
		var v view
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v))
		return v
	}

	v := read()
	require.Equal(t, len(want), v.Targets)
	require.Len(t, v.Members, 2)
	for i, m := range v.Members {
		require.Equal(t, cs[i].id, m.ID)
		require.Equal(t, leases.KindCollector, m.Kind)
		require.Equal(t, len(cs[i].owned()), m.Targets, "collector %s's targets by its claims", m.ID)
		require.NotZero(t, m.Targets)
	}
	require.Zero(t, v.Pending)
	require.Empty(t, v.Moves)

	// A rebalancer (another process) starts a move of one of collector-0's
	// targets to a scraper that never takes it over: it stays pending.
	claims, _, err := leases.ListClaims(t.Context(), e.etcd, e.ks)
	require.NoError(t, err)
	var moved leases.Claim
	for _, cl := range claims {
		if cl.Owner == "collector-0" {
			moved = cl
			break
		}
	}
	require.NotEmpty(t, moved.Target)
	sess, err := leases.NewSession(t.Context(), e.etcd, leases.SessionConfig{TTL: 10 * time.Second}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Close() })
	deadline := time.Now().Add(time.Minute).Truncate(time.Second)
	require.NoError(t, leases.StartMove(t.Context(), sess, e.ks, leases.Move{
		Target: moved.Target, From: "collector-0", To: "scraper-9", Epoch: moved.Epoch, Deadline: deadline, Reason: "balance",
	}))

	v = read()
	require.Equal(t, 1, v.Pending)
	require.Len(t, v.Moves, 1)
	mv := v.Moves[0]
	require.Equal(t, moved.Target, mv.Target)
	require.Equal(t, "collector-0", mv.From)
	require.Equal(t, "scraper-9", mv.To)
	require.Equal(t, "balance", mv.Reason)
	require.Equal(t, web.MoveInProgress, mv.Outcome)
	require.True(t, deadline.Equal(mv.Deadline), "deadline %s, want %s", mv.Deadline, deadline)
}
