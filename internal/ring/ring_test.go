package ring

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRingKeepsRegionsApart reserves, commits and gives back regions of
// random sizes in random order, and checks that no two live regions share
// a byte, that the ring never holds more than its size, and that a region
// is reused only once everything before it is back.
func TestRingKeepsRegionsApart(t *testing.T) {
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel()
	const size = 64 << 10
	r := New(size)
	rnd := rand.New(rand.NewPCG(1, 2))
	type live struct {
		b   []byte
		end int64
		tag byte
	}
	var regions []live
	check := func() {
		t.Helper()
		for _, l := range regions {
			for _, c := range l.b {
				if c != l.tag {
					t.Fatalf("region ending at %d was overwritten", l.end)
				}
			}
		}
	}
	for i := range 5000 {
		// Give back random regions until the next reservation fits.
		n := 1 + rnd.IntN(size/4)
		for len(regions) > 0 && rnd.IntN(3) > 0 {
			k := rnd.IntN(len(regions))
			r.Put(regions[k].end)
			regions = append(regions[:k], regions[k+1:]...)
		}
		var used int
		for _, l := range regions {
			used += len(l.b)
		}
		b, err := r.Reserve(done, n) // fails at once when there is no room
		if err != nil {
			// No room: give everything back and start over.
			for _, l := range regions {
				r.Put(l.end)
			}
			regions = regions[:0]
			if b, err = r.Reserve(ctx, n); err != nil {
				t.Fatal(err)
			}
		} else if used+n > size {
			t.Fatalf("reserved %d bytes with %d of %d in use", n, used, size)
		}
		if len(b) != n || cap(b) != n {
			t.Fatalf("reserve(%d) gave len %d cap %d", n, len(b), cap(b))
		}
		keep := rnd.IntN(n + 1)
		tag := byte(i)
		for j := range b[:keep] {
			b[j] = tag
		}
		if end := r.Commit(keep); keep > 0 {
			regions = append(regions, live{b: b[:keep], end: end, tag: tag})
		}
		check()
	}
}

// TestRingReserveWaits checks that a reservation waits for room and ends
// with the context.
func TestRingReserveWaits(t *testing.T) {
	r := New(1000)
	if _, err := r.Reserve(context.Background(), 800); err != nil {
		t.Fatal(err)
	}
	end := r.Commit(800)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Reserve(ctx, 300); err == nil {
		t.Fatal("reserved 300 bytes of a ring of 1000 holding 800")
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		r.Put(end)
	}()
	if _, err := r.Reserve(context.Background(), 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reserve(context.Background(), 1001); err == nil {
		t.Fatal("reserved more than the ring holds")
	}
}
