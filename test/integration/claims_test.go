//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/allot-dev/allot/pkg/leases"
)

// keyspace is the scrapers' (default) etcd prefix.
var keyspace = leases.Keyspace{Prefix: "/allot/"}

// etcdClient reaches the etcd members through their ports published on
// loopback; those change when a member restarts, so refresh re-reads them.
type etcdClient struct {
	c   *cluster
	cli *clientv3.Client
}

func newEtcdClient(t *testing.T, c *cluster) *etcdClient {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            c.etcdEndpoints(t),
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	c.t.Cleanup(func() { _ = cli.Close() })
	return &etcdClient{c: c, cli: cli}
}

// etcdEndpointsByMember returns the client URLs of the running members, in the
// order of c.etcd ("" for a member that is not running).
func (c *cluster) etcdEndpointsByMember(t *testing.T) []string {
	t.Helper()
	out := make([]string, len(c.etcd))
	for i, m := range c.etcd {
		st, err := m.State(t.Context())
		if err != nil || !st.Running {
			continue
		}
		if ep, err := m.PortEndpoint(t.Context(), "2379/tcp", "http"); err == nil {
			out[i] = ep
		}
	}
	return out
}

func (c *cluster) etcdEndpoints(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, ep := range c.etcdEndpointsByMember(t) {
		if ep != "" {
			out = append(out, ep)
		}
	}
	if len(out) == 0 {
		t.Fatal("no etcd member running")
	}
	return out
}

func (e *etcdClient) refresh(t *testing.T) {
	t.Helper()
	e.cli.SetEndpoints(e.c.etcdEndpoints(t)...)
}

// waitEtcdHealthy waits until every member answers etcdctl endpoint health,
// run inside the member itself (the image has no shell, but etcdctl).
func (c *cluster) waitEtcdHealthy(t *testing.T, timeout time.Duration) {
	t.Helper()
	waitForWhy(t, timeout, "etcd cluster healthy", func() (bool, string) {
		for i, m := range c.etcd {
			code, _, err := m.Exec(t.Context(), []string{"/usr/local/bin/etcdctl", "--endpoints=http://127.0.0.1:2379",
				"--command-timeout=2s", "endpoint", "health"})
			if err != nil || code != 0 {
				return false, fmt.Sprintf("etcd%d: exit %d, %v", i+1, code, err)
			}
		}
		return true, ""
	})
}

// etcdLeader returns the index in c.etcd of the raft leader.
func (c *cluster) etcdLeader(t *testing.T) int {
	t.Helper()
	eps := c.etcdEndpointsByMember(t)
	for i, ep := range eps {
		if ep == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		st, err := c.etcdc.cli.Status(ctx, strings.TrimPrefix(ep, "http://"))
		cancel()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return i
		}
	}
	t.Fatal("no etcd leader found")
	return -1
}

// members returns the IDs of the registered scrapers, sorted.
func (e *etcdClient) members(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ms, _, err := leases.ListMembers(ctx, e.cli, keyspace)
	if err != nil {
		t.Fatalf("list members: %v", err)
	}
	var out []string
	for _, m := range ms {
		if m.Kind == "" || m.Kind == leases.KindScraper {
			out = append(out, m.ID)
		}
	}
	return out
}

// checkClaims checks the keyspace is consistent: every claim names a live
// member as owner and sits on that member's lease.
func (e *etcdClient) checkClaims(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.Txn(ctx).Then(
		clientv3.OpGet(keyspace.Members(), clientv3.WithPrefix()),
		clientv3.OpGet(keyspace.Claims(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		t.Fatalf("read members and claims: %v", err)
	}
	memberLease := map[string]int64{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		memberLease[strings.TrimPrefix(string(kv.Key), keyspace.Members())] = kv.Lease
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		id := strings.TrimPrefix(string(kv.Key), keyspace.Claims())
		var v struct {
			Owner string `json:"owner"`
			Lease int64  `json:"lease"`
		}
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			t.Errorf("claim %s: %v", id, err)
			continue
		}
		ml, live := memberLease[v.Owner]
		switch {
		case !live:
			t.Errorf("claim %s is owned by %q, not a live member", id, v.Owner)
		case kv.Lease != ml || v.Lease != ml:
			t.Errorf("claim %s of %s is on lease %x (value says %x), its owner's member key on %x", id, v.Owner, kv.Lease, v.Lease, ml)
		}
	}
}

// claimEvent is one change of claims/<Target> as the test's watch saw it.
type claimEvent struct {
	At     time.Time
	Target string
	Owner  string // "" when the claim was deleted
	Rev    int64
}

// claimLog records every claim change from the start of the cluster, with
// the time the test saw it, and keeps the current owners.
type claimLog struct {
	mu      sync.Mutex
	initial map[string]string
	owner   map[string]string
	events  []claimEvent
	last    time.Time
	errs    []string
}

func startClaimLog(t *testing.T, e *etcdClient) *claimLog {
	t.Helper()
	l := &claimLog{initial: map[string]string{}, owner: map[string]string{}, last: time.Now()}
	resp, err := e.cli.Get(t.Context(), keyspace.Claims(), clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("list claims: %v", err)
	}
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), keyspace.Claims())
		l.initial[id] = claimOwner(kv.Value)
		l.owner[id] = l.initial[id]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rev := resp.Header.Revision + 1
		for ctx.Err() == nil {
			// No WithRequireLeader: the client itself resumes the watch
			// from the last revision across member failures.
			for wr := range e.cli.Watch(ctx, keyspace.Claims(), clientv3.WithPrefix(), clientv3.WithRev(rev)) {
				if err := wr.Err(); err != nil {
					l.noteErr(err)
					break
				}
				for _, ev := range wr.Events {
					l.add(ev.Type == clientv3.EventTypeDelete, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
					rev = ev.Kv.ModRevision + 1
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if len(l.errs) > 0 {
			t.Logf("claim watch errors: %v", l.errs)
		}
	})
	return l
}

func claimOwner(v []byte) string {
	var c struct {
		Owner string `json:"owner"`
	}
	if json.Unmarshal(v, &c) != nil || c.Owner == "" {
		return "?"
	}
	return c.Owner
}

func (l *claimLog) noteErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err.Error())
}

func (l *claimLog) add(deleted bool, key, value []byte, rev int64) {
	ev := claimEvent{At: time.Now(), Target: strings.TrimPrefix(string(key), keyspace.Claims()), Rev: rev}
	if !deleted {
		ev.Owner = claimOwner(value)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
	l.last = ev.At
	if deleted {
		delete(l.owner, ev.Target)
	} else {
		l.owner[ev.Target] = ev.Owner
	}
}

// owners returns the current owner of every claimed target.
func (l *claimLog) owners() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.owner))
	for k, v := range l.owner {
		out[k] = v
	}
	return out
}

// ownedBy returns the targets owner holds now, sorted.
func (l *claimLog) ownedBy(owner string) []string {
	var out []string
	for id, o := range l.owners() {
		if o == owner {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (l *claimLog) lastChange() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// since returns the events seen at or after from.
func (l *claimLog) since(from time.Time) []claimEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []claimEvent
	for _, ev := range l.events {
		if !ev.At.Before(from) {
			out = append(out, ev)
		}
	}
	return out
}

// handoffs counts, per target, how often between from and to it got an
// owner other than its previous one (A → B directly by a move, or A →
// deleted → B). A claim deleted and taken again by the same owner is not a
// handoff.
func (l *claimLog) handoffs(from, to time.Time) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := map[string]string{}
	for k, v := range l.initial {
		prev[k] = v
	}
	out := map[string]int{}
	for _, ev := range l.events {
		if ev.Owner == "" {
			continue
		}
		if p, ok := prev[ev.Target]; ok && p != ev.Owner && !ev.At.Before(from) && !ev.At.After(to) {
			out[ev.Target]++
		}
		prev[ev.Target] = ev.Owner
	}
	return out
}
