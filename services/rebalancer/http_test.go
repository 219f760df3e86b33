package rebalancer

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHandler(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 0, 1)
	c.startScraper("a", simConfig{Seed: 1})
	cli := c.client()
	r, err := New(c.testConfig("r1"), cli, nil, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	drained := func() bool {
		resp, err := cli.Get(ctx, DrainKey(c.ks, "a"))
		require.NoError(t, err)
		return len(resp.Kvs) == 1
	}
	for _, tc := range []struct {
		name, method, path string
		code               int
		drained            bool
	}{
		{"drain without scraper", http.MethodPost, "/api/v1/drain", http.StatusBadRequest, false},
		{"drain invalid id", http.MethodPost, "/api/v1/drain?scraper=a/b", http.StatusBadRequest, false},
		{"drain unknown scraper", http.MethodPost, "/api/v1/drain?scraper=zz", http.StatusNotFound, false},
		{"drain", http.MethodPost, "/api/v1/drain?scraper=a", http.StatusOK, true},
		{"drain twice", http.MethodPost, "/api/v1/drain?scraper=a", http.StatusOK, true},
		{"wrong method", http.MethodGet, "/api/v1/drain?scraper=a", http.StatusMethodNotAllowed, true},
		{"undrain", http.MethodDelete, "/api/v1/drain?scraper=a", http.StatusOK, false},
		{"undrain again", http.MethodDelete, "/api/v1/drain?scraper=a", http.StatusOK, false},
		{"cluster", http.MethodGet, "/api/v1/cluster", http.StatusOK, false},
		{"cluster page", http.MethodGet, "/cluster", http.StatusOK, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.code, resp.StatusCode)
			require.Equal(t, tc.drained, drained())
			if tc.path == "/api/v1/cluster" {
				var st Status
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
				require.Equal(t, "r1", st.ID)
				require.False(t, st.IsLeader)
			}
			if tc.path == "/cluster" {
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
				require.Contains(t, string(body), "Rebalancer <b>r1</b>")
			}
		})
	}
}
