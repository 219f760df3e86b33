package export

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/collector/pdata/pmetric"
)

// QueueConfig bounds an exporter's queue and says where it persists.
type QueueConfig struct {
	// Size is the number of scrapes held at most (default 1024).
	Size int `yaml:"size,omitempty"`
	// Dir, if set, keeps the queue in segment files in this directory, so
	// that what is queued when the process stops is sent after it starts
	// again. Config sets it to <queue_dir>/<exporter name>.
	Dir string `yaml:"-"`
}

func (c QueueConfig) open(name string) (queue, error) {
	size := c.Size
	if size <= 0 {
		size = DefaultQueueSize
	}
	if c.Dir == "" {
		return newMemQueue(size), nil
	}
	q, err := openDiskQueue(c.Dir, size)
	if err != nil {
		return nil, fmt.Errorf("queue of %s: %w", name, err)
	}
	return q, nil
}

// diskQueue is a FIFO of scrapes in append-only segment files:
//
//	seg-<first seq, 20 digits>: records [u32 length][u32 crc32c][u64 seq][OTLP protobuf]
//	acked:                      [u64 seq][u32 crc32c] of the last acknowledged record
//
// A put appends a record (no fsync: a process restart loses nothing, a
// machine crash may lose the page cache); an ack rewrites "acked"
// atomically and deletes the segments it covers. Opening scans the
// segments, skips what is acked and cuts a torn record at the tail.
type diskQueue struct {
	dir    string
	cap    int
	segMax int64

	mu       sync.Mutex
	recs     []diskRec // unacked, in order; recs[:handed] are handed out
	handed   int
	nextSeq  uint64
	active   *os.File
	activeSz int64
	segs     []diskSeg // oldest first; the last is active
	notEmpty chan struct{}
	closed   bool
	// wbuf is the record being written, reused: put is on the scrape
	// path, and a record is as large as a scrape.
	wbuf []byte
}

type diskRec struct {
	seq    uint64
	seg    uint64 // first seq of its segment
	off    int64  // of the payload
	n      int    // payload length
	points int
}

type diskSeg struct {
	first, last uint64 // seqs; last 0 when empty
	path        string
}

const (
	recHeader     = 16
	defaultSegMax = 16 << 20
	ackedFile     = "acked"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func openDiskQueue(dir string, capacity int) (*diskQueue, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	q := &diskQueue{dir: dir, cap: capacity, segMax: defaultSegMax, nextSeq: 1, notEmpty: make(chan struct{}, 1)}
	acked, err := q.readAcked()
	if err != nil {
		return nil, err
	}
	names, err := filepath.Glob(filepath.Join(dir, "seg-*"))
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	for i, name := range names {
		first, err := strconv.ParseUint(strings.TrimPrefix(filepath.Base(name), "seg-"), 10, 64)
		if err != nil {
			continue
		}
		seg, err := q.scan(name, first, acked, i == len(names)-1)
		if err != nil {
			return nil, err
		}
		if seg.last != 0 && seg.last <= acked {
			if err := os.Remove(name); err != nil {
				return nil, err
			}
			continue
		}
		q.segs = append(q.segs, seg)
	}
	if acked >= q.nextSeq {
		q.nextSeq = acked + 1
	}
	if err := q.openActive(); err != nil {
		return nil, err
	}
	return q, nil
}

// scan reads the records of one segment; records after a torn or corrupt
// one are cut off (only the last segment can be torn by a crash).
func (q *diskQueue) scan(path string, first, acked uint64, last bool) (diskSeg, error) {
	seg := diskSeg{first: first, path: path}
	f, err := os.Open(path)
	if err != nil {
		return seg, err
	}
	defer f.Close()
	var off int64
	hdr := make([]byte, recHeader)
	var payload []byte // reused: the decoded pdata copies what it keeps
	for {
		if _, err := io.ReadFull(f, hdr); err != nil {
			break
		}
		n := binary.LittleEndian.Uint32(hdr[0:])
		sum := binary.LittleEndian.Uint32(hdr[4:])
		seq := binary.LittleEndian.Uint64(hdr[8:])
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := io.ReadFull(f, payload); err != nil || crc32.Checksum(payload, crcTable) != sum {
			break
		}
		if seq > acked {
			points := 0
			if md, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(payload); err == nil {
				points = md.DataPointCount()
			}
			q.recs = append(q.recs, diskRec{seq: seq, seg: first, off: off + recHeader, n: int(n), points: points})
		}
		seg.last = seq
		if seq >= q.nextSeq {
			q.nextSeq = seq + 1
		}
		off += recHeader + int64(n)
	}
	if last {
		if err := os.Truncate(path, off); err != nil {
			return seg, err
		}
	}
	return seg, nil
}

func (q *diskQueue) openActive() error {
	if n := len(q.segs); n > 0 {
		s := q.segs[n-1]
		f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		q.active, q.activeSz = f, st.Size()
		return nil
	}
	return q.newSegment()
}

func (q *diskQueue) newSegment() error {
	if q.active != nil {
		if err := q.active.Sync(); err != nil {
			return err
		}
		if err := q.active.Close(); err != nil {
			return err
		}
	}
	path := filepath.Join(q.dir, fmt.Sprintf("seg-%020d", q.nextSeq))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	q.active, q.activeSz = f, 0
	q.segs = append(q.segs, diskSeg{first: q.nextSeq, path: path})
	return nil
}

func (q *diskQueue) put(md pmetric.Metrics) error {
	payload, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
	if err != nil {
		return fmt.Errorf("queue: marshal: %w", err)
	}
	return q.putEncoded(payload, md.DataPointCount())
}

// putEncoded writes an encoded scrape as it is: a record's payload is a
// MetricsData, which is the same encoding as an ExportMetricsServiceRequest.
// The payload is written before it returns, so it is not retained.
func (q *diskQueue) putEncoded(payload []byte, points int) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrShutdown
	}
	if len(q.recs) >= q.cap {
		q.mu.Unlock()
		return ErrQueueFull
	}
	if q.activeSz >= q.segMax {
		if err := q.newSegment(); err != nil {
			q.mu.Unlock()
			return fmt.Errorf("queue: new segment: %w", err)
		}
	}
	seq := q.nextSeq
	// One write per record, so that a crash tears at most the last one.
	buf := slices.Grow(q.wbuf[:0], recHeader+len(payload))[:recHeader]
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(payload, crcTable))
	binary.LittleEndian.PutUint64(buf[8:], seq)
	buf = append(buf, payload...)
	q.wbuf = buf
	if _, err := q.active.Write(buf); err != nil {
		q.mu.Unlock()
		return fmt.Errorf("queue: write: %w", err)
	}
	seg := &q.segs[len(q.segs)-1]
	q.recs = append(q.recs, diskRec{seq: seq, seg: seg.first, off: q.activeSz + recHeader, n: len(payload), points: points})
	seg.last = seq
	q.activeSz += int64(len(buf))
	q.nextSeq++
	q.mu.Unlock()
	select {
	case q.notEmpty <- struct{}{}:
	default:
	}
	return nil
}

func (q *diskQueue) get(ctx context.Context) (item, error) {
	for {
		q.mu.Lock()
		if q.handed < len(q.recs) {
			r := q.recs[q.handed]
			q.handed++
			path := q.segPath(r.seg)
			q.mu.Unlock()
			raw, err := readRecord(path, r)
			if err != nil {
				// An unreadable record cannot be sent; skip it.
				return item{md: pmetric.NewMetrics(), points: 0, seq: r.seq}, nil
			}
			// Handed out encoded: an OTLP exporter sends it as it is.
			return item{raw: raw, points: r.points, seq: r.seq}, nil
		}
		q.mu.Unlock()
		select {
		case <-q.notEmpty:
		case <-ctx.Done():
			return item{}, ctx.Err()
		}
	}
}

func (q *diskQueue) segPath(first uint64) string {
	for _, s := range q.segs {
		if s.first == first {
			return s.path
		}
	}
	return filepath.Join(q.dir, fmt.Sprintf("seg-%020d", first))
}

// readRecord reads the payload of r into a pooled buffer.
func readRecord(path string, r diskRec) (*buf, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := getBuf(r.n)
	if _, err := f.ReadAt(b.b, r.off); err != nil {
		b.release()
		return nil, err
	}
	return b, nil
}

func (q *diskQueue) ack(it item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < q.handed && q.recs[n].seq <= it.seq {
		n++
	}
	if n == 0 {
		return nil
	}
	q.recs = slices.Delete(q.recs, 0, n)
	q.handed -= n
	if err := q.writeAcked(it.seq); err != nil {
		return err
	}
	// Drop the segments every record of which is acked, except the active.
	for len(q.segs) > 1 && q.segs[0].last != 0 && q.segs[0].last <= it.seq {
		if err := os.Remove(q.segs[0].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		q.segs = q.segs[1:]
	}
	return nil
}

func (q *diskQueue) readAcked() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(q.dir, ackedFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) != 12 || crc32.Checksum(b[:8], crcTable) != binary.LittleEndian.Uint32(b[8:]) {
		// A corrupt marker: resend everything rather than lose anything.
		return 0, nil
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (q *diskQueue) writeAcked(seq uint64) error {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], crcTable))
	tmp := filepath.Join(q.dir, ackedFile+".tmp")
	if err := os.WriteFile(tmp, b[:], 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(q.dir, ackedFile))
}

func (q *diskQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.recs)
}

func (q *diskQueue) capacity() int { return q.cap }

func (q *diskQueue) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	if err := q.active.Sync(); err != nil {
		q.active.Close()
		return err
	}
	return q.active.Close()
}
