package leases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrMoveInProgress means StartMove found another move of the target.
var ErrMoveInProgress = errors.New("leases: move in progress")

// Move is a hand-over of Target from From to To, announced at moves/<target>
// on the rebalancer's session lease (so it vanishes with the rebalancer).
type Move struct {
	Target string `json:"target"`
	From   string `json:"from"`
	To     string `json:"to"`
	// Epoch is the claim's epoch when the move was planned; the move only
	// happens if the claim has not been written since.
	Epoch int64 `json:"epoch"`
	// Deadline is when the rebalancer gives up on the move and aborts it.
	Deadline time.Time `json:"deadline"`
	Reason   string    `json:"reason,omitempty"`
}

// encode gives the stored form. TakeOver compares it byte for byte, so a
// Move must encode the same however its Deadline's location was set.
func (m Move) encode() (string, error) {
	m.Deadline = m.Deadline.UTC()
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode move of %s: %w", m.Target, err)
	}
	return string(b), nil
}

func decodeMove(ks Keyspace, kv *mvccpb.KeyValue) (Move, error) {
	var m Move
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return Move{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	m.Target = strings.TrimPrefix(string(kv.Key), ks.Moves())
	return m, nil
}

// StartMove writes moves/<m.Target> on s's lease, in one transaction guarded
// by the claim's epoch being m.Epoch and no other move of the target being
// in progress. It fails with ErrNotOwner if the claim changed (or is gone)
// and with ErrMoveInProgress if another move is under way. m.From is not
// checked against the claim: the epoch already pins the claim's value.
func StartMove(ctx context.Context, s *Session, ks Keyspace, m Move) error {
	switch {
	case m.Target == "" || m.From == "" || m.To == "":
		return fmt.Errorf("start move %+v: target, from and to are required", m)
	case m.From == m.To:
		return fmt.Errorf("start move of %s: from and to are both %s", m.Target, m.From)
	case m.Epoch <= 0:
		return fmt.Errorf("start move of %s: epoch %d is not a claim's", m.Target, m.Epoch)
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("start move of %s: %w", m.Target, err)
	}
	v, err := m.encode()
	if err != nil {
		return err
	}
	ck, mk := ks.Claim(m.Target), ks.Move(m.Target)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(ck), "=", m.Epoch),
			clientv3.Compare(clientv3.CreateRevision(mk), "=", 0)).
		Then(clientv3.OpPut(mk, v, clientv3.WithLease(s.id))).
		Else(clientv3.OpGet(ck, clientv3.WithKeysOnly()), clientv3.OpGet(mk, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("start move of %s: %w", m.Target, leaseErr(err))
	}
	if resp.Succeeded {
		return nil
	}
	claim := resp.Responses[0].GetResponseRange().GetKvs()
	if len(claim) == 0 || claim[0].ModRevision != m.Epoch {
		return fmt.Errorf("start move of %s at epoch %d: %w", m.Target, m.Epoch, ErrNotOwner)
	}
	return fmt.Errorf("start move of %s: %w", m.Target, ErrMoveInProgress)
}

// TakeOver completes move m on the destination's side: c's owner must be
// m.To. In one transaction, if the claim's epoch is still m.Epoch and
// moves/<target> still holds exactly m, it puts the claim on c's lease and
// deletes the move. It returns the new claim (its epoch is the transaction's
// revision), or ErrNotOwner if the claim or the move changed, the move was
// aborted or already taken over, or c is not m.To.
func (c *Claims) TakeOver(ctx context.Context, m Move) (Claim, error) {
	if m.To != c.owner {
		return Claim{}, fmt.Errorf("take over %s: move is to %q, not %q: %w", m.Target, m.To, c.owner, ErrNotOwner)
	}
	if err := c.s.Err(); err != nil {
		return Claim{}, fmt.Errorf("take over %s: %w", m.Target, err)
	}
	v, err := m.encode()
	if err != nil {
		return Claim{}, err
	}
	ck, mk := c.ks.Claim(m.Target), c.ks.Move(m.Target)
	ctx, cancel := c.s.bind(ctx)
	defer cancel()
	resp, err := c.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(ck), "=", m.Epoch),
			clientv3.Compare(clientv3.Value(mk), "=", v)).
		Then(clientv3.OpPut(ck, c.value, clientv3.WithLease(c.s.id)), clientv3.OpDelete(mk)).
		Commit()
	if err != nil {
		return Claim{}, c.fail("take over "+m.Target, err)
	}
	if !resp.Succeeded {
		return Claim{}, fmt.Errorf("take over %s at epoch %d: %w", m.Target, m.Epoch, ErrNotOwner)
	}
	c.metrics.won.Inc()
	return Claim{Target: m.Target, Owner: c.owner, Epoch: resp.Header.Revision, Lease: c.s.id}, nil
}

// AbortMove deletes moves/<target>, whatever it holds. Aborting a move that
// is not there is not an error.
func AbortMove(ctx context.Context, cli *clientv3.Client, ks Keyspace, target string) error {
	if _, err := cli.Delete(ctx, ks.Move(target)); err != nil {
		return fmt.Errorf("abort move of %s: %w", target, err)
	}
	return nil
}

// ListMoves returns the moves in progress, sorted by target. Entries that
// do not decode are skipped.
func ListMoves(ctx context.Context, cli *clientv3.Client, ks Keyspace) ([]Move, error) {
	var out []Move
	_, err := scanMoves(ctx, cli, ks, func() { out = out[:0] }, func(m Move, _ int64) { out = append(out, m) })
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Move) int { return strings.Compare(a.Target, b.Target) })
	return out, nil
}

// scanMoves calls each for every move in progress with the revision it was
// written at, and returns the revision read at; reset is called before a
// retry after a compaction. Entries that do not decode are skipped.
func scanMoves(ctx context.Context, cli *clientv3.Client, ks Keyspace, reset func(), each func(m Move, modRev int64)) (int64, error) {
	return scanPrefix(ctx, cli, ks.Moves(), reset, func(kv *mvccpb.KeyValue) error {
		if m, err := decodeMove(ks, kv); err == nil {
			each(m, kv.ModRevision)
		}
		return nil
	})
}
