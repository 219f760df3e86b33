package leases

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxBatch is the most targets one claim or release transaction carries.
// etcd's default --max-txn-ops is 128 and it counts every nested
// transaction's own operation against what the outer one leaves over, so
// 127 nested one-op transactions is the largest batch it accepts.
const MaxBatch = 127

// parallelTxns is how many batch transactions Claim and Release keep in
// flight. etcd commits concurrent transactions in one raft entry batch and
// one fsync, so a few in flight multiply throughput; more than this gains
// little and only delays other clients.
const parallelTxns = 4

// Claim is one target owned by one session.
type Claim struct {
	Target string
	Owner  string
	// Epoch is the ModRevision of claims/<target>: it changes whenever the
	// claim is written, so it fences releases, moves and stale owners.
	Epoch int64
	Lease clientv3.LeaseID
}

// ClaimValue is the JSON stored at claims/<target>.
type ClaimValue struct {
	Owner string `json:"owner"`
	Lease int64  `json:"lease"`
}

// Claims claims, releases and takes over targets for one owner on one
// session's lease. Only the session's holder creates one; it is safe for
// concurrent use.
type Claims struct {
	s        *Session
	ks       Keyspace
	owner    string
	batch    int
	inflight int // batch transactions in flight at once
	value    string
	metrics  *claimMetrics
}

// NewClaims returns the claim set of owner on session s. batch is the number
// of targets per transaction; zero, negative or more than MaxBatch means
// MaxBatch. reg may be nil and may be shared.
func NewClaims(s *Session, ks Keyspace, owner string, batch int, reg prometheus.Registerer) *Claims {
	if batch <= 0 || batch > MaxBatch {
		batch = MaxBatch
	}
	v, _ := json.Marshal(ClaimValue{Owner: owner, Lease: int64(s.id)}) // cannot fail
	return &Claims{s: s, ks: ks, owner: owner, batch: batch, inflight: parallelTxns, value: string(v), metrics: newClaimMetrics(reg)}
}

// Session is the session the claims live on.
func (c *Claims) Session() *Session { return c.s }

// Owner returns the claim on target, if any.
func (c *Claims) Owner(ctx context.Context, target string) (Claim, bool, error) {
	resp, err := c.s.cli.Get(ctx, c.ks.Claim(target))
	if err != nil {
		return Claim{}, false, fmt.Errorf("get claim %s: %w", target, err)
	}
	if len(resp.Kvs) == 0 {
		return Claim{}, false, nil
	}
	cl, err := decodeClaim(c.ks, resp.Kvs[0])
	if err != nil {
		return Claim{}, false, err
	}
	return cl, true, nil
}

// Claim tries to claim every target that nobody owns. It sends one
// transaction per batch, each target a nested transaction
// If(CreateRevision(claims/T) == 0) Then(Put(claims/T, owner, WithLease(L))),
// so a taken target does not fail the rest of its batch. A few batches are in
// flight at once. It returns the claims won, in the order of targets, each
// with the revision of the transaction that won it as its epoch.
//
// If the session ends (or is already over) it stops and fails with the
// session's Err (ErrLeaseLost if lost). On any error it returns the claims
// known to be won too; a batch whose transaction was interrupted may or may
// not have been applied, so callers that go on using the session reconcile
// with Owner or ListClaims. Duplicate targets are claimed once.
func (c *Claims) Claim(ctx context.Context, targets []string) ([]Claim, error) {
	if err := c.s.Err(); err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	ctx, cancel := c.s.bind(ctx)
	defer cancel()
	targets = unique(targets)
	results := make([][]Claim, (len(targets)+c.batch-1)/c.batch)
	err := c.eachBatch(len(targets), func(i, lo, hi int) error {
		chunk := targets[lo:hi]
		ops := make([]clientv3.Op, len(chunk))
		for j, t := range chunk {
			k := c.ks.Claim(t)
			ops[j] = clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
				[]clientv3.Op{clientv3.OpPut(k, c.value, clientv3.WithLease(c.s.id))},
				nil)
		}
		resp, err := c.commit(ctx, ops)
		if err != nil {
			c.metrics.errors.Add(float64(len(chunk)))
			return c.fail(fmt.Sprintf("claim %d targets (%s…)", len(chunk), chunk[0]), err)
		}
		won := make([]Claim, 0, len(chunk))
		for j, r := range resp.Responses {
			if r.GetResponseTxn().GetSucceeded() {
				won = append(won, Claim{Target: chunk[j], Owner: c.owner, Epoch: resp.Header.Revision, Lease: c.s.id})
			}
		}
		c.metrics.won.Add(float64(len(won)))
		c.metrics.taken.Add(float64(len(chunk) - len(won)))
		results[i] = won
		return nil
	})
	won := concat(results)
	if err != nil {
		return won, err
	}
	// A transaction that went out before the local deadline may have landed
	// after it; the caller must not rely on a session that is over.
	if err := c.s.Err(); err != nil {
		return won, fmt.Errorf("claim: %w", err)
	}
	return won, nil
}

// Release deletes the given claims, each guarded by
// If(ModRevision(claims/T) == Epoch), batched like Claim, so a claim that
// has changed hands since is left alone. It returns the claims actually
// released, in the given order. It works on a lost session too: the epoch is
// the fence.
func (c *Claims) Release(ctx context.Context, claims []Claim) ([]Claim, error) {
	claims = uniqueClaims(claims)
	results := make([][]Claim, (len(claims)+c.batch-1)/c.batch)
	err := c.eachBatch(len(claims), func(i, lo, hi int) error {
		chunk := claims[lo:hi]
		ops := make([]clientv3.Op, len(chunk))
		for j, cl := range chunk {
			k := c.ks.Claim(cl.Target)
			ops[j] = clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", cl.Epoch)},
				[]clientv3.Op{clientv3.OpDelete(k)},
				nil)
		}
		resp, err := c.commit(ctx, ops)
		if err != nil {
			return fmt.Errorf("release %d claims (%s…): %w", len(chunk), chunk[0].Target, err)
		}
		released := make([]Claim, 0, len(chunk))
		for j, r := range resp.Responses {
			if r.GetResponseTxn().GetSucceeded() {
				released = append(released, chunk[j])
			}
		}
		results[i] = released
		return nil
	})
	return concat(results), err
}

// concat joins per-batch results; never nil, so "none" reads the same
// whether there were no batches or no wins.
func concat(results [][]Claim) []Claim {
	if out := slices.Concat(results...); out != nil {
		return out
	}
	return []Claim{}
}

// eachBatch calls fn for batch i = items [lo, hi) of n items, with up to
// c.inflight calls running at once. After the first error it starts no more
// batches but lets those in flight finish (cancelling them would only make
// their outcome unknown), and returns that error.
func (c *Claims) eachBatch(n int, fn func(i, lo, hi int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, c.inflight)
	for i, lo := 0, 0; lo < n; i, lo = i+1, lo+c.batch {
		sem <- struct{}{}
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i, lo, min(lo+c.batch, n)); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func (c *Claims) commit(ctx context.Context, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
	start := time.Now()
	resp, err := c.s.cli.Txn(ctx).Then(ops...).Commit()
	c.metrics.txnDuration.Observe(time.Since(start).Seconds())
	return resp, err
}

// fail explains a failed write: the session's end if that is why, else
// the etcd error (a lease unknown to the server becomes ErrLeaseLost).
func (c *Claims) fail(what string, err error) error {
	if serr := c.s.Err(); serr != nil {
		return fmt.Errorf("%s: %w", what, serr)
	}
	return fmt.Errorf("%s: %w", what, leaseErr(err))
}

// ListClaims returns every claim by target, and the revision it was read at
// (one consistent revision, read 10k keys per request). Entries that do not
// decode are skipped.
func ListClaims(ctx context.Context, cli *clientv3.Client, ks Keyspace) (map[string]Claim, int64, error) {
	return listClaims(ctx, cli, ks, pageSize)
}

func listClaims(ctx context.Context, cli *clientv3.Client, ks Keyspace, page int64) (map[string]Claim, int64, error) {
	out := map[string]Claim{}
	rev, err := scanPrefixPaged(ctx, cli, ks.Claims(), page, func() { clear(out) }, func(kv *mvccpb.KeyValue) error {
		if cl, err := decodeClaim(ks, kv); err == nil {
			out[cl.Target] = cl
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

func decodeClaim(ks Keyspace, kv *mvccpb.KeyValue) (Claim, error) {
	var v ClaimValue
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return Claim{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return Claim{
		Target: strings.TrimPrefix(string(kv.Key), ks.Claims()),
		Owner:  v.Owner,
		Epoch:  kv.ModRevision,
		Lease:  clientv3.LeaseID(kv.Lease),
	}, nil
}

// unique drops repeated targets, keeping the first of each: etcd rejects a
// transaction that writes one key twice.
func unique(ts []string) []string {
	seen := make(map[string]struct{}, len(ts))
	out := ts[:0:0]
	for _, t := range ts {
		if _, ok := seen[t]; !ok {
			seen[t] = struct{}{}
			out = append(out, t)
		}
	}
	return out
}

func uniqueClaims(cs []Claim) []Claim {
	seen := make(map[string]struct{}, len(cs))
	return slices.DeleteFunc(slices.Clone(cs), func(c Claim) bool {
		if _, ok := seen[c.Target]; ok {
			return true
		}
		seen[c.Target] = struct{}{}
		return false
	})
}
