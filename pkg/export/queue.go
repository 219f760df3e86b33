package export

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/collector/pdata/pmetric"
)

// queue holds scrapes between ConsumeMetrics and the sender. Put never
// blocks; get blocks until an item is there or ctx ends; an item is
// removed by ack, once the sender is done with it (sent or dropped), so a
// persistent queue can hand it out again after a crash.
type queue interface {
	// put adds md or fails with ErrQueueFull.
	put(md pmetric.Metrics) error
	// putEncoded adds a scrape encoded as an OTLP request (see
	// otlp.EncodedConsumer) with points data points, or fails like put. It
	// does not retain req: it copies it or writes it out.
	putEncoded(req []byte, points int) error
	// get waits for the oldest unacked item not handed out yet. The item's
	// encoded bytes are the caller's to release, after ack.
	get(ctx context.Context) (item, error)
	// ack removes every item up to and including it.
	ack(it item) error
	// len is the number of items not acked; capacity the bound on it.
	len() int
	capacity() int
	close() error
}

// item is one queued scrape: pdata, or encoded as the protobuf of an
// ExportMetricsServiceRequest (raw, a pooled buffer only this item refers
// to: released once the item is sent or dropped).
type item struct {
	md     pmetric.Metrics
	raw    *buf
	points int
	seq    uint64
}

// metrics returns the item as pdata, decoding it if it is encoded (the
// decoded pdata copies what it keeps of the bytes).
func (it item) metrics() (pmetric.Metrics, error) {
	if it.raw == nil {
		return it.md, nil
	}
	md, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(it.raw.b)
	if err != nil {
		return pmetric.Metrics{}, fmt.Errorf("decode queued scrape: %w", err)
	}
	return md, nil
}

// encoded returns the item encoded, marshalling it if it is pdata. The
// buf is the item's own, not another reference.
func (it item) encoded() (*buf, error) {
	if it.raw != nil {
		return it.raw, nil
	}
	raw, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(it.md)
	if err != nil {
		return nil, fmt.Errorf("encode queued scrape: %w", err)
	}
	return ownedBuf(raw), nil
}

// release gives the item's encoded bytes back to the pool.
func (it item) release() {
	if it.raw != nil {
		it.raw.release()
	}
}

// memQueue is a bounded in-memory FIFO.
type memQueue struct {
	mu       sync.Mutex
	items    []item // unacked; items[:handed] are handed out
	handed   int
	cap      int
	seq      uint64
	notEmpty chan struct{} // 1-slot trigger
}

func newMemQueue(capacity int) *memQueue {
	return &memQueue{cap: capacity, notEmpty: make(chan struct{}, 1)}
}

func (q *memQueue) put(md pmetric.Metrics) error {
	return q.add(item{md: md, points: md.DataPointCount()})
}

// putEncoded queues a pooled copy of req.
func (q *memQueue) putEncoded(req []byte, points int) error {
	b := copyBuf(req)
	if err := q.add(item{raw: b, points: points}); err != nil {
		b.release()
		return err
	}
	return nil
}

func (q *memQueue) add(it item) error {
	q.mu.Lock()
	if len(q.items) >= q.cap {
		q.mu.Unlock()
		return ErrQueueFull
	}
	q.seq++
	it.seq = q.seq
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.notEmpty <- struct{}{}:
	default:
	}
	return nil
}

func (q *memQueue) get(ctx context.Context) (item, error) {
	for {
		q.mu.Lock()
		if q.handed < len(q.items) {
			it := q.items[q.handed]
			q.handed++
			q.mu.Unlock()
			return it, nil
		}
		q.mu.Unlock()
		select {
		case <-q.notEmpty:
		case <-ctx.Done():
			return item{}, ctx.Err()
		}
	}
}

func (q *memQueue) ack(it item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < q.handed && q.items[n].seq <= it.seq {
		n++
	}
	clear(q.items[:n])
	q.items = q.items[n:]
	q.handed -= n
	return nil
}

func (q *memQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

func (q *memQueue) capacity() int { return q.cap }
func (q *memQueue) close() error  { return nil }
