package chunk

// Repeats groups the indices of a list of handles by handle, so that a
// batch load reads each distinct blob once and hands it to every index
// that wants it.
type Repeats struct {
	// First maps each distinct handle to the first index that holds it.
	First map[Handle]int
	// Order lists the first index of each distinct handle, in list order.
	Order []int
	next  []int // next[i]: the next index after i with the same handle, or -1
}

// GroupRepeats groups the indices of hs.
func GroupRepeats(hs []Handle) *Repeats {
	r := &Repeats{First: make(map[Handle]int, len(hs)), next: make([]int, len(hs))}
	for i, h := range hs {
		r.next[i] = -1
		if j, ok := r.First[h]; ok {
			r.next[i], r.next[j] = r.next[j], i
			continue
		}
		r.First[h] = i
		r.Order = append(r.Order, i)
	}
	return r
}

// Each calls fn for every index that holds the handle first holds, first
// included, until fn returns an error, which it returns.
func (r *Repeats) Each(first int, fn func(i int) error) error {
	for i := first; i >= 0; i = r.next[i] {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}
