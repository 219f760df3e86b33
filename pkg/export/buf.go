package export

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// buf is the memory of one encoded scrape between the queue and the
// backend, taken from the package's pool: otlp.EncodedConsumer hands over
// bytes it reuses, so a queue copies them, and recycling the copies keeps
// the scrape path free of allocations (and of the garbage collection they
// drive).
//
// A buf is counted: whoever holds it (the queue, then the sender) holds one
// reference; a transport that reads it after its call returned (gRPC's
// writer frees its data frames on its own goroutine) takes another. The
// last release returns it to the pool, so no buffer is reused while
// anything may still read it.
type buf struct {
	b     []byte
	refs  atomic.Int32
	class int8 // size class; -1: not pooled (made by the garbage collector's rules)
}

// Size classes: up to minPooled, then four per power of two (a buffer
// wastes at most a quarter of itself) up to maxPooled; larger ones are not
// pooled.
const (
	minPooledShift = 12 // 4 KiB
	maxPooledShift = 26 // 64 MiB
	numClasses     = 1 + 4*(maxPooledShift-minPooledShift)
)

var bufPools [numClasses]sync.Pool // *buf

// classOf returns the size class of an n-byte buffer and its capacity;
// class -1 is not pooled.
func classOf(n int) (int, int) {
	if n <= 1<<minPooledShift {
		return 0, 1 << minPooledShift
	}
	e := bits.Len(uint(n-1)) - 1 // 2^e < n <= 2^(e+1)
	if e >= maxPooledShift {
		return -1, n
	}
	step := 1 << (e - 2)
	q := (n + step - 1) / step // 5..8 quarters of 2^(e-2)
	return 1 + 4*(e-minPooledShift) + q - 5, q * step
}

// getBuf returns a buf of n bytes (not zeroed) with one reference.
func getBuf(n int) *buf {
	c, size := classOf(n)
	var b *buf
	if c >= 0 {
		b, _ = bufPools[c].Get().(*buf)
	}
	if b == nil {
		b = &buf{b: make([]byte, size), class: int8(c)}
	}
	b.b = b.b[:n]
	b.refs.Store(1)
	return b
}

// copyBuf returns a pooled copy of p.
func copyBuf(p []byte) *buf {
	b := getBuf(len(p))
	copy(b.b, p)
	return b
}

// ownedBuf wraps bytes nobody else refers to (a marshalled pdata scrape):
// released, they go to the garbage collector.
func ownedBuf(p []byte) *buf {
	b := &buf{b: p, class: -1}
	b.refs.Store(1)
	return b
}

// ref takes another reference.
func (b *buf) ref() { b.refs.Add(1) }

// release drops a reference; the last one returns b to its pool.
func (b *buf) release() {
	switch n := b.refs.Add(-1); {
	case n > 0:
		return
	case n < 0:
		panic("export: buffer released twice")
	}
	if b.class >= 0 {
		bufPools[b.class].Put(b)
	}
}

// bytesOf lists the bytes of bufs, the parts of one request.
func bytesOf(bufs []*buf) [][]byte {
	out := make([][]byte, len(bufs))
	for i, b := range bufs {
		out[i] = b.b
	}
	return out
}
