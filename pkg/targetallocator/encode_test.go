package targetallocator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAppendGroupsIsEncodingJSON(t *testing.T) {
	for _, tc := range []struct {
		name   string
		groups []targetGroup
	}{
		{"empty", []targetGroup{}},
		{"plain", []targetGroup{{Targets: []string{"h:1"}, Labels: map[string]string{"job": "j", "__address__": "h:1", "a": ""}}}},
		{"escapes", []targetGroup{
			{Targets: []string{"h:1", "h:2"}, Labels: map[string]string{"q": `"quoted" \ back`, "ctl": "a\nb\tc\x01\x1f\r\b\f"}},
			{Targets: []string{"<h>&"}, Labels: map[string]string{"u": "ünï €", "bad": "a\xffb", "sep": "x\u2028y\u2029z"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, string(mustJSON(tc.groups)), string(appendGroups(nil, tc.groups)))
		})
	}
}
