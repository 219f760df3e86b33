package placement

import (
	"math"
	"testing"
)

func TestMeasure(t *testing.T) {
	ms := []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}, {ID: "c", Weight: 2}, {ID: "d", Weight: 1}}
	for _, tc := range []struct {
		name string
		c    Cluster
		want Stats
	}{
		{"empty", Cluster{}, Stats{Ratio: 1, ByCountRatio: 1}},
		{"even", Cluster{Members: ms[:2], Targets: []Target{
			{ID: "1", Series: 10, Owner: "a"}, {ID: "2", Series: 10, Owner: "b"},
		}}, Stats{Busiest: 10, Mean: 10, Ratio: 1, ByCountRatio: 1}},
		{"skewed, empty member, unowned", Cluster{Members: []Member{ms[0], ms[1], ms[3]}, Targets: []Target{
			{ID: "1", Series: 30, Owner: "a"}, {ID: "2", Series: 10, Owner: "a"}, {ID: "3", Series: 20, Owner: "b"},
			{ID: "4", Series: 99, Owner: ""}, {ID: "5", Series: 99, Owner: "gone"},
		}}, Stats{Busiest: 40, Mean: 20, Ratio: 2, ByCountRatio: 2, Empty: 1, Unowned: 2}},
		{"weighted", Cluster{Members: []Member{ms[0], ms[2]}, Targets: []Target{
			{ID: "1", Series: 10, Owner: "a"}, {ID: "2", Series: 20, Owner: "c"}, {ID: "3", Series: 0, Owner: "c"},
		}}, Stats{Busiest: 10, Mean: 10, Ratio: 1, ByCountRatio: 1}},
		{"no load", Cluster{Members: ms[:2], Targets: []Target{{ID: "1", Owner: "a"}}},
			Stats{Ratio: 1, ByCountRatio: 2, Empty: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Measure(tc.c)
			if math.Abs(got.Busiest-tc.want.Busiest) > 1e-9 || math.Abs(got.Mean-tc.want.Mean) > 1e-9 ||
				math.Abs(got.Ratio-tc.want.Ratio) > 1e-9 || math.Abs(got.ByCountRatio-tc.want.ByCountRatio) > 1e-9 ||
				got.Empty != tc.want.Empty || got.Unowned != tc.want.Unowned {
				t.Fatalf("Measure = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRecommend(t *testing.T) {
	c := Cluster{Members: members(3), Targets: []Target{{ID: "1", Series: 2500}, {ID: "2", Series: 2500}, {ID: "3", Series: 1}}}
	for _, tc := range []struct {
		name string
		c    Cluster
		per  float64
		want int
	}{
		{"rounds up", c, 1000, 6},
		{"exact", Cluster{Targets: c.Targets[:2]}, 1000, 5},
		{"one is the least", c, 1e9, 1},
		{"no targets", Cluster{Members: members(4)}, 1000, 1},
		{"no opinion without a budget", c, 0, 3},
		{"no opinion with a nonsense budget", c, math.NaN(), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Recommend(tc.c, tc.per); got != tc.want {
				t.Fatalf("Recommend(%v) = %d, want %d", tc.per, got, tc.want)
			}
		})
	}
}
