package pack

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"golang.org/x/crypto/chacha20poly1305"
)

// testSealer seals like crypto.Key: nonce(24) ‖ XChaCha20-Poly1305 ciphertext ‖ tag(16).
type testSealer struct{ aead cipher.AEAD }

func newTestSealer(tb testing.TB) *testSealer {
	tb.Helper()
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(key); err != nil {
		tb.Fatal(err)
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		tb.Fatal(err)
	}
	return &testSealer{aead: aead}
}

func (s *testSealer) Seal(dst, plaintext, ad []byte) []byte {
	var nonce [chacha20poly1305.NonceSizeX]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(err)
	}
	dst = append(dst, nonce[:]...)
	return s.aead.Seal(dst, nonce[:], plaintext, ad)
}

func (s *testSealer) Open(dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < s.Overhead() {
		return dst, errors.New("test sealer: too short")
	}
	n := chacha20poly1305.NonceSizeX
	return s.aead.Open(dst, sealed[:n], sealed[n:], ad)
}

func (s *testSealer) Overhead() int { return chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead }

// nullSealer does not encrypt: it lets fuzzers reach the decoders behind the
// authentication, which random bytes would otherwise never pass.
type nullSealer struct{}

func (nullSealer) Seal(dst, plaintext, ad []byte) []byte { return append(dst, plaintext...) }
func (nullSealer) Open(dst, sealed, ad []byte) ([]byte, error) {
	return append(dst, sealed...), nil
}
func (nullSealer) Overhead() int { return 0 }

// randomBytes returns n incompressible bytes.
func randomBytes(tb testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

// textBytes returns n bytes of word salad that zstd compresses about 3:1.
func textBytes(n int, seed uint64) []byte {
	words := []string{"pack ", "blob ", "index ", "snapshot ", "tree ", "chunk ", "the ", "of ", "restore\n", "image ", "disk ", "nightly "}
	r := mrand.New(mrand.NewPCG(seed, 7))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
	}
	return b[:n]
}

// randomHandle returns a handle of kind k with a random ID.
func randomHandle(tb testing.TB, k chunk.Kind) chunk.Handle {
	h := chunk.Handle{Kind: k}
	copy(h.ID[:], randomBytes(tb, chunk.IDSize))
	return h
}
