package archive

import "testing"

func TestClassOf(t *testing.T) {
	tests := []struct{ n, size int }{
		{0, minClass}, {1, minClass}, {minClass, minClass}, {minClass + 1, 5 << 10},
		{1 << 20, 1 << 20}, {1<<20 + 1, 5 << 18}, {5 << 18, 5 << 18}, {8 << 20, 8 << 20},
	}
	for _, tt := range tests {
		size, _ := classOf(tt.n)
		if size != tt.size {
			t.Errorf("classOf(%d) = %d, want %d", tt.n, size, tt.size)
		}
	}
	// Every class has its own pool slot, and sizes are never below n nor
	// more than 25% above it.
	seen := map[int]int{}
	for n := 1; n <= maxPooled; n += 997 {
		size, i := classOf(n)
		if size < n || (n > minClass && float64(size) > 1.25*float64(n)) {
			t.Fatalf("classOf(%d) = %d", n, size)
		}
		if s, ok := seen[i]; ok && s != size {
			t.Fatalf("index %d used for sizes %d and %d", i, s, size)
		}
		seen[i] = size
	}
}

func TestPoolRefusesOddBuffers(t *testing.T) {
	var p bufPool
	p.put(make([]byte, 0, maxPooled*2)) // oversized
	p.put(make([]byte, 0, 5000))        // not a class size
	b := p.get(5000)
	if len(b) != 5000 || cap(b) != 5<<10 {
		t.Errorf("get(5000) gave len %d cap %d, want 5000 and %d", len(b), cap(b), 5<<10)
	}
}
