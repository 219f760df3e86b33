package export

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

type queueOpener func(t *testing.T, dir string, capacity int) queue

func TestQueues(t *testing.T) {
	openers := map[string]queueOpener{
		"memory": func(_ *testing.T, _ string, c int) queue { return newMemQueue(c) },
		"disk": func(t *testing.T, dir string, c int) queue {
			q, err := openDiskQueue(dir, c)
			require.NoError(t, err)
			return q
		},
	}
	for name, open := range openers {
		t.Run(name, func(t *testing.T) {
			q := open(t, t.TempDir(), 3)
			require.Equal(t, 3, q.capacity())
			for i := range 3 {
				require.NoError(t, q.put(testMetrics("a", float64(i))))
			}
			require.ErrorIs(t, q.put(testMetrics("a", 9)), ErrQueueFull)
			ctx := context.Background()
			a, err := q.get(ctx)
			require.NoError(t, err)
			b, err := q.get(ctx)
			require.NoError(t, err)
			require.Equal(t, []point{{"a", 0}}, pointsOf(itemMetrics(t, a)))
			require.Equal(t, []point{{"a", 1}}, pointsOf(itemMetrics(t, b)))
			require.Equal(t, 1, a.points)
			require.Equal(t, 3, q.len(), "handed out is not acked")
			require.NoError(t, q.ack(b))
			require.Equal(t, 1, q.len())
			require.NoError(t, q.put(testMetrics("a", 3)))
			c, err := q.get(ctx)
			require.NoError(t, err)
			require.Equal(t, []point{{"a", 2}}, pointsOf(itemMetrics(t, c)))
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			d, err := q.get(cancelled)
			require.NoError(t, err, "items there are handed out even when the caller stops waiting")
			require.Equal(t, []point{{"a", 3}}, pointsOf(itemMetrics(t, d)))
			_, err = q.get(cancelled)
			require.ErrorIs(t, err, context.Canceled)
			require.NoError(t, q.close())
		})
	}
}

func TestDiskQueueRecovery(t *testing.T) {
	dir := t.TempDir()
	q, err := openDiskQueue(dir, 100)
	require.NoError(t, err)
	q.segMax = 200 // a few records per segment
	for i := range 10 {
		require.NoError(t, q.put(testMetrics("a", float64(i))))
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*"))
	require.Greater(t, len(segs), 2, "segments rotate")
	var last item
	for range 4 {
		last, err = q.get(context.Background())
		require.NoError(t, err)
	}
	require.NoError(t, q.ack(last))
	require.NoError(t, q.close())
	after, _ := filepath.Glob(filepath.Join(dir, "seg-*"))
	require.Less(t, len(after), len(segs), "fully acked segments are deleted")

	// A torn write at the tail (a crash mid-put) is cut off.
	f, err := os.OpenFile(after[len(after)-1], os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{0x40, 0, 0, 0, 1, 2, 3})
	require.NoError(t, err)
	require.NoError(t, f.Close())

	q, err = openDiskQueue(dir, 100)
	require.NoError(t, err)
	require.Equal(t, 6, q.len())
	for i := 4; i < 10; i++ {
		it, err := q.get(context.Background())
		require.NoError(t, err)
		require.Equal(t, []point{{"a", float64(i)}}, pointsOf(itemMetrics(t, it)))
	}
	require.NoError(t, q.put(testMetrics("a", 10)))
	it, err := q.get(context.Background())
	require.NoError(t, err)
	require.Equal(t, []point{{"a", 10}}, pointsOf(itemMetrics(t, it)))
	require.Greater(t, it.seq, uint64(10), "sequence numbers continue")
	require.NoError(t, q.ack(it))
	require.NoError(t, q.close())

	q, err = openDiskQueue(dir, 100)
	require.NoError(t, err)
	require.Zero(t, q.len())
	require.NoError(t, q.close())
}

// itemMetrics is the pdata of a queued item.
func itemMetrics(t *testing.T, it item) pmetric.Metrics {
	t.Helper()
	md, err := it.metrics()
	require.NoError(t, err)
	return md
}
