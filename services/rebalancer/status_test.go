package rebalancer

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMoveLogKeepsNewest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		added int
		want  int
	}{
		{"empty", 0, 0},
		{"some", 3, 3},
		{"full", recentMoves, recentMoves},
		{"wrapped", recentMoves*2 + 7, recentMoves},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l moveLog
			for i := range tc.added {
				l.add(MoveRecord{Target: fmt.Sprint(i)})
			}
			got := l.list()
			require.Len(t, got, tc.want)
			for i, r := range got {
				require.Equal(t, fmt.Sprint(tc.added-1-i), r.Target, "newest first")
			}
		})
	}
}
