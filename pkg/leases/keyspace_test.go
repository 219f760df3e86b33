package leases

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKeyspace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix string
		want   string
	}{
		{"", "/allot/"},
		{"/allot/", "/allot/"},
		{"/x", "/x/"},
		{"/a/b/", "/a/b/"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			for _, ks := range []Keyspace{{Prefix: tc.prefix}, NewKeyspace(tc.prefix)} {
				require.Equal(t, tc.want+"members/", ks.Members())
				require.Equal(t, tc.want+"members/s1", ks.Member("s1"))
				require.Equal(t, tc.want+"claims/", ks.Claims())
				require.Equal(t, tc.want+"claims/00ff", ks.Claim("00ff"))
				require.Equal(t, tc.want+"moves/", ks.Moves())
				require.Equal(t, tc.want+"moves/00ff", ks.Move("00ff"))
				require.Equal(t, tc.want+"load/", ks.Loads())
				require.Equal(t, tc.want+"load/s1", ks.Load("s1"))
				require.Equal(t, tc.want+"election/rebalancer", ks.Election("rebalancer"))
			}
			require.Equal(t, tc.want, NewKeyspace(tc.prefix).Prefix)
		})
	}
}
