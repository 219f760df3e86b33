package placement

// mheap is a binary heap of member indexes that can update or remove any
// member in O(log n). Several heaps may share one pos slice when no member
// is in more than one of them.
type mheap struct {
	a    []int32
	pos  []int32 // member -> index in a, or -1
	less func(x, y int32) bool
}

func (h *mheap) top() int32 {
	if len(h.a) == 0 {
		return -1
	}
	return h.a[0]
}

func (h *mheap) push(i int32) {
	h.pos[i] = int32(len(h.a))
	h.a = append(h.a, i)
	h.up(len(h.a) - 1)
}

func (h *mheap) remove(i int32) {
	k := int(h.pos[i])
	if k < 0 {
		return
	}
	last := len(h.a) - 1
	h.swap(k, last)
	h.a = h.a[:last]
	h.pos[i] = -1
	if k < last {
		h.down(k)
		h.up(k)
	}
}

// fix restores the order after member i's key changed; no-op if absent.
func (h *mheap) fix(i int32) {
	if k := int(h.pos[i]); k >= 0 {
		h.down(k)
		h.up(k)
	}
}

func (h *mheap) swap(x, y int) {
	h.a[x], h.a[y] = h.a[y], h.a[x]
	h.pos[h.a[x]] = int32(x)
	h.pos[h.a[y]] = int32(y)
}

func (h *mheap) up(k int) {
	for k > 0 {
		parent := (k - 1) / 2
		if !h.less(h.a[k], h.a[parent]) {
			return
		}
		h.swap(k, parent)
		k = parent
	}
}

func (h *mheap) down(k int) {
	n := len(h.a)
	for {
		c := 2*k + 1
		if c >= n {
			return
		}
		if r := c + 1; r < n && h.less(h.a[r], h.a[c]) {
			c = r
		}
		if !h.less(h.a[c], h.a[k]) {
			return
		}
		h.swap(k, c)
		k = c
	}
}
