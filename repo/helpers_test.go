package repo

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomBytes returns n reproducible random bytes.
func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// compressibleBytes returns n bytes of repetitive text.
func compressibleBytes(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		b.WriteString("imago stores this line again and again; ")
	}
	return b.Bytes()[:n]
}

// mustFlush flushes r or fails the test.
func mustFlush(t testing.TB, r *Repository) {
	t.Helper()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// wantErrContaining fails unless err is non-nil and mentions every part.
func wantErrContaining(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}
