package crypto

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// KeySize is the length of a master key: the encryption key followed by
	// the ID key.
	KeySize = encKeySize + idKeySize

	encKeySize = chacha20poly1305.KeySize // 32
	idKeySize  = 32                       // a BLAKE3 key

	// NonceSize is the length of the random nonce that starts every sealed
	// message (XChaCha20's 192-bit nonce: safe to draw at random).
	NonceSize = chacha20poly1305.NonceSizeX

	// TagSize is the length of the Poly1305 tag that ends every sealed
	// message.
	TagSize = chacha20poly1305.Overhead

	// Overhead is how much longer a sealed message is than its plaintext.
	Overhead = NonceSize + TagSize
)

// ErrUnauthenticated is wrapped by every error of Key.Open: the message is
// too short, was changed, was sealed with another key, or with other
// associated data.
var ErrUnauthenticated = errors.New("crypto: message authentication failed")

// Key is a repository's master key. It is safe for concurrent use.
type Key struct {
	enc  [encKeySize]byte
	id   [idKeySize]byte
	aead cipher.AEAD // XChaCha20-Poly1305 over enc, created once
}

// NewRandomKey returns a new master key from the system's secure random
// source.
func NewRandomKey() (*Key, error) {
	var b [KeySize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("crypto: random key: %w", err)
	}
	return KeyFromBytes(b[:])
}

// KeyFromBytes returns the key whose Bytes are b. b must hold KeySize bytes,
// and neither half may be all zero (a sign of a bug or of damage, never of a
// random key).
func KeyFromBytes(b []byte) (*Key, error) {
	if len(b) != KeySize {
		return nil, fmt.Errorf("crypto: key has %d bytes, want %d", len(b), KeySize)
	}
	k := &Key{}
	copy(k.enc[:], b[:encKeySize])
	copy(k.id[:], b[encKeySize:])
	var zero [32]byte
	if subtle.ConstantTimeCompare(k.enc[:], zero[:]) == 1 || subtle.ConstantTimeCompare(k.id[:], zero[:]) == 1 {
		return nil, errors.New("crypto: key half is all zero")
	}
	aead, err := chacha20poly1305.NewX(k.enc[:])
	if err != nil {
		return nil, fmt.Errorf("crypto: %w", err) // unreachable: the key has the right size
	}
	k.aead = aead
	return k, nil
}

// Bytes returns a copy of the KeySize bytes of k: the encryption key followed
// by the ID key.
func (k *Key) Bytes() []byte {
	b := make([]byte, 0, KeySize)
	b = append(b, k.enc[:]...)
	return append(b, k.id[:]...)
}

// IDKey returns the key of the keyed BLAKE3 hash that computes blob IDs.
func (k *Key) IDKey() [32]byte { return k.id }

// Overhead returns how much longer a sealed message is than its plaintext:
// Overhead (40).
func (k *Key) Overhead() int { return Overhead }

// Seal appends nonce ‖ ciphertext ‖ tag of plaintext to dst and returns the
// result; the nonce is fresh and random, and ad is authenticated but not
// stored. plaintext and dst's spare capacity must not overlap, since the
// ciphertext is written NonceSize bytes after where plaintext would start.
// A failing system random source panics, as it leaves nothing safe to do.
func (k *Key) Seal(dst, plaintext, ad []byte) []byte {
	ret, out := grow(dst, NonceSize+len(plaintext)+TagSize)
	nonce := out[:NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto: random nonce: %v", err))
	}
	k.aead.Seal(out[NonceSize:NonceSize], nonce, plaintext, ad)
	return ret
}

// Open checks sealed (as made by Seal with the same ad) and appends its
// plaintext to dst. Any failure, including input shorter than Overhead,
// returns an error wrapping ErrUnauthenticated, and no plaintext. dst's spare
// capacity must not overlap sealed, except to decrypt in place by passing
// sealed[NonceSize:NonceSize] as dst.
func (k *Key) Open(dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrUnauthenticated, len(sealed))
	}
	out, err := k.aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], ad)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	return out, nil
}

// String hides the key, so that logging a Key by mistake leaks nothing.
func (k *Key) String() string { return "crypto.Key{redacted}" }

// GoString hides the key from %#v.
func (k *Key) GoString() string { return k.String() }

// grow extends b by n bytes, reallocating if needed, and returns the whole
// slice and the n new bytes.
func grow(b []byte, n int) (whole, tail []byte) {
	if total := len(b) + n; cap(b) >= total {
		whole = b[:total]
	} else {
		whole = make([]byte, total)
		copy(whole, b)
	}
	return whole, whole[len(b):]
}
