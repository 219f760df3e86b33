package placement

// RankZones is Rank with zone diversity: the members are taken in order of
// preference for key, but a member whose zone already appears earlier in the
// answer waits until every zone has one member in it. So the first two of
// RankZones are in different zones whenever there are two zones, and losing
// a zone never loses every one of the first k. Members with an empty Zone
// form one zone.
func RankZones(key uint64, members []Member, k int) []int {
	all := Rank(key, members, len(members))
	if k > len(all) {
		k = len(all)
	}
	if k <= 0 {
		return nil
	}
	out := make([]int, 0, len(all))
	var later []int
	seen := make(map[string]bool)
	for _, i := range all {
		if z := members[i].Zone; !seen[z] {
			seen[z] = true
			out = append(out, i)
		} else {
			later = append(later, i)
		}
	}
	out = append(out, later...)
	return out[:k]
}
