package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeStore is a ClusterStore with fixed answers.
type fakeStore struct {
	counts   map[string]int
	moves    []ClusterMove
	countErr error
	moveErr  error
}

func (s fakeStore) ClaimCounts(context.Context) (map[string]int, error) { return s.counts, s.countErr }
func (s fakeStore) PendingMoves(context.Context) ([]ClusterMove, error) { return s.moves, s.moveErr }

func TestWithStore(t *testing.T) {
	now := time.Now()
	pending := ClusterMove{Time: now, Target: "00000000000000aa", From: "scraper-1", To: "otel-0", Reason: "balance", Outcome: MoveInProgress, Deadline: now.Add(30 * time.Second)}
	// What a process without a rebalancer knows: members and load reports.
	noRebalancer := Cluster{Members: []ClusterMember{
		{ID: "scraper-1", Targets: 4, Series: 400, LoadUpdated: now},
		{ID: "otel-0", Kind: "collector"},
	}}
	// What a rebalancer leader evaluated: it is complete as it is.
	leader := pageCluster()
	store := fakeStore{counts: map[string]int{"scraper-1": 5, "otel-0": 3, "gone-member": 1}, moves: []ClusterMove{pending}}

	type member struct {
		id      string
		targets int
	}
	for _, tc := range []struct {
		name        string
		src         Cluster
		srcErr      error
		store       fakeStore
		wantTargets int
		wantMembers []member
		wantPending int
		wantMoves   []string // targets, newest first
		wantErrors  []string
		wantErr     bool
	}{
		{
			name: "no rebalancer: targets from claims, moves from the store",
			src:  noRebalancer, store: store,
			wantTargets: 9, wantMembers: []member{{"otel-0", 3}, {"scraper-1", 5}},
			wantPending: 1, wantMoves: []string{"00000000000000aa"},
		},
		{
			name: "a rebalancer leader's view is kept",
			src:  leader, store: store,
			wantTargets: 3, wantMembers: []member{{"otel-0", 1}, {"scraper-1", 1}, {"scraper-2", 1}},
			wantPending: 1, wantMoves: []string{"0a8f0c3d5e6b7a91"}, wantErrors: leader.Errors,
		},
		{
			name: "store failures are reported, the rest stands",
			src:  noRebalancer, store: fakeStore{countErr: errors.New("etcd unreachable"), moveErr: errors.New("etcd unreachable")},
			wantTargets: 0, wantMembers: []member{{"otel-0", 0}, {"scraper-1", 4}},
			wantPending: 0, wantMoves: []string{},
			wantErrors: []string{"claims: etcd unreachable", "moves: etcd unreachable"},
		},
		{
			name: "no claims, no moves",
			src:  noRebalancer, store: fakeStore{counts: map[string]int{}},
			wantTargets: 0, wantMembers: []member{{"otel-0", 0}, {"scraper-1", 0}},
			wantPending: 0, wantMoves: []string{},
		},
		{
			name: "a failed source is passed on",
			src:  Cluster{}, srcErr: errors.New("list members: etcd unreachable"), store: store,
			wantMembers: []member{}, wantMoves: []string{}, wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := ClusterSourceFunc(func(context.Context) (Cluster, error) {
				c := tc.src
				c.Members = slices.Clone(c.Members)
				c.Moves = slices.Clone(c.Moves)
				return c, tc.srcErr
			})
			c, err := WithStore(src, tc.store).Cluster(t.Context())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			c.normalise()
			if c.Targets != tc.wantTargets {
				t.Errorf("targets = %d, want %d", c.Targets, tc.wantTargets)
			}
			got := []member{}
			for _, m := range c.Members {
				got = append(got, member{m.ID, m.Targets})
			}
			if !slices.Equal(got, tc.wantMembers) {
				t.Errorf("members = %v, want %v", got, tc.wantMembers)
			}
			if c.PendingMoves != tc.wantPending {
				t.Errorf("pending moves = %d, want %d", c.PendingMoves, tc.wantPending)
			}
			moves := []string{}
			for _, m := range c.Moves {
				moves = append(moves, m.Target)
			}
			if !slices.Equal(moves, tc.wantMoves) {
				t.Errorf("moves = %v, want %v", moves, tc.wantMoves)
			}
			if !slices.Equal(c.Errors, tc.wantErrors) {
				t.Errorf("errors = %q, want %q", c.Errors, tc.wantErrors)
			}
		})
	}
}

func TestClusterPageShowsStoreData(t *testing.T) {
	now := time.Now()
	src := ClusterSourceFunc(func(context.Context) (Cluster, error) {
		return Cluster{Members: []ClusterMember{{ID: "scraper-1"}, {ID: "otel-0", Kind: "collector"}}}, nil
	})
	st := fakeStore{
		counts: map[string]int{"scraper-1": 2, "otel-0": 7},
		moves:  []ClusterMove{{Time: now, Target: "00000000000000aa", From: "scraper-1", To: "otel-0", Reason: "balance", Outcome: MoveInProgress, Deadline: now.Add(time.Minute)}},
	}
	h := ClusterPage(WithStore(src, st))
	code, body := get(t, h, "/cluster")
	if code != http.StatusOK {
		t.Fatalf("code %d: %s", code, body)
	}
	for _, s := range []string{"<b>9</b>claimed targets", "<b>1</b>moves pending", `<td class="num">7</td>`, "00000000000000aa", MoveInProgress} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q", s)
		}
	}

	_, body = get(t, ClusterAPI(WithStore(src, st)), "/api/v1/cluster")
	var c struct {
		Targets  int `json:"targets"`
		Pending  int `json:"pending_moves"`
		Scrapers []struct {
			ID      string `json:"id"`
			Targets int    `json:"targets"`
		} `json:"scrapers"`
		Moves []struct {
			Target   string    `json:"target"`
			Outcome  string    `json:"outcome"`
			Deadline time.Time `json:"deadline"`
		} `json:"recent_moves"`
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	if c.Targets != 9 || c.Pending != 1 || len(c.Scrapers) != 2 || c.Scrapers[0].ID != "otel-0" || c.Scrapers[0].Targets != 7 ||
		len(c.Moves) != 1 || c.Moves[0].Outcome != MoveInProgress || c.Moves[0].Deadline.IsZero() {
		t.Errorf("JSON = %+v", c)
	}
}
