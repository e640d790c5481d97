package main

import (
	"math/rand/v2"
	"testing"
)

func TestCut(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]key, 1<<18)
	for i := range keys {
		if r.IntN(100) < 10 {
			continue // a zero block (the zero key below is key{})
		}
		for j := range keys[i] {
			keys[i][j] = byte(r.Uint32())
		}
	}
	sims, err := parseSims("fixed-16k aligned-8k aligned-16k aligned-64k")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range sims {
		spans := c.cut(keys, key{})
		var blocks, longest int64
		next := int64(0)
		for _, sp := range spans {
			if sp.start < next || sp.end <= sp.start {
				t.Fatalf("%s: bad span %v after %d", c.name, sp, next)
			}
			for i := sp.start; i < sp.end && !c.fixed; i++ {
				if keys[i] == (key{}) {
					t.Fatalf("%s: span %v holds a zero block", c.name, sp)
				}
			}
			blocks += sp.end - sp.start
			longest = max(longest, sp.end-sp.start)
			next = sp.end
		}
		mean := float64(blocks) / float64(len(spans))
		t.Logf("%s: %d chunks, mean %.2f blocks, longest %d", c.name, len(spans), mean, longest)
		if !c.fixed && longest > int64(4*c.blocks) {
			t.Errorf("%s: a chunk of %d blocks exceeds the maximum", c.name, longest)
		}
	}
}
