package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func newTestKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := newTestKey(t)
	for _, n := range []int{0, 1, 63, 64, 1000, 1 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := bytes.Repeat([]byte{0xa5}, n)
			ad := []byte("kind and id")
			sealed := k.Seal(nil, plain, ad)
			if len(sealed) != n+k.Overhead() {
				t.Fatalf("sealed %d bytes into %d, want %d", n, len(sealed), n+k.Overhead())
			}
			got, err := k.Open(nil, sealed, ad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("opened plaintext differs")
			}
		})
	}
}

func TestSealAppendsToDst(t *testing.T) {
	k := newTestKey(t)
	prefix := []byte("header:")
	for _, dst := range [][]byte{
		append([]byte{}, prefix...),              // must grow
		append(make([]byte, 0, 1024), prefix...), // has room
	} {
		sealed := k.Seal(dst, []byte("payload"), nil)
		if !bytes.HasPrefix(sealed, prefix) {
			t.Fatalf("Seal lost dst's bytes: %q", sealed[:len(prefix)])
		}
		got, err := k.Open([]byte("x"), sealed[len(prefix):], nil)
		if err != nil || string(got) != "xpayload" {
			t.Fatalf("Open = %q, %v; want \"xpayload\"", got, err)
		}
	}
}

func TestSealNonceIsFresh(t *testing.T) {
	k := newTestKey(t)
	a := k.Seal(nil, []byte("same"), nil)
	b := k.Seal(nil, []byte("same"), nil)
	if bytes.Equal(a[:NonceSize], b[:NonceSize]) || bytes.Equal(a, b) {
		t.Fatal("sealing the same plaintext twice gave the same nonce or bytes")
	}
}

func TestOpenInPlace(t *testing.T) {
	k := newTestKey(t)
	sealed := k.Seal(nil, []byte("in place"), []byte("ad"))
	got, err := k.Open(sealed[NonceSize:NonceSize], sealed, []byte("ad"))
	if err != nil || string(got) != "in place" {
		t.Fatalf("Open in place = %q, %v", got, err)
	}
}

func TestOpenRefusesTampering(t *testing.T) {
	k := newTestKey(t)
	other := newTestKey(t)
	ad := []byte{1, 2, 3}
	sealed := k.Seal(nil, []byte("the quick brown fox"), ad)
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 1
		return b
	}

	tests := []struct {
		name   string
		key    *Key
		sealed []byte
		ad     []byte
	}{
		{"nonce flipped", k, flip(0), ad},
		{"last nonce byte flipped", k, flip(NonceSize - 1), ad},
		{"ciphertext flipped", k, flip(NonceSize + 3), ad},
		{"tag flipped", k, flip(len(sealed) - 1), ad},
		{"other associated data", k, sealed, []byte{1, 2, 4}},
		{"no associated data", k, sealed, nil},
		{"other key", other, sealed, ad},
		{"truncated by one", k, sealed[:len(sealed)-1], ad},
		{"extended by one", k, append(bytes.Clone(sealed), 0), ad},
		{"shorter than overhead", k, sealed[:Overhead-1], ad},
		{"empty", k, nil, ad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.key.Open(nil, tt.sealed, tt.ad)
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Open = %v, want ErrUnauthenticated", err)
			}
			if got != nil {
				t.Fatal("Open returned plaintext with an error")
			}
		})
	}
}

func TestKeyFromBytes(t *testing.T) {
	k := newTestKey(t)
	b := k.Bytes()
	if len(b) != KeySize {
		t.Fatalf("Bytes has %d bytes", len(b))
	}
	k2, err := KeyFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if k2.IDKey() != k.IDKey() {
		t.Fatal("ID key changed")
	}
	if id := k.IDKey(); !bytes.Equal(b[32:], id[:]) {
		t.Fatal("ID key is not the second half of Bytes")
	}
	got, err := k2.Open(nil, k.Seal(nil, []byte("msg"), nil), nil)
	if err != nil || string(got) != "msg" {
		t.Fatalf("key rebuilt from bytes cannot open: %q, %v", got, err)
	}
	b[0] ^= 1 // Bytes is a copy
	if !bytes.Equal(k.Bytes()[1:], b[1:]) || k.Bytes()[0] == b[0] {
		t.Fatal("changing Bytes' result changed the key")
	}

	bad := map[string][]byte{
		"empty":         nil,
		"short":         make([]byte, KeySize-1),
		"long":          make([]byte, KeySize+1),
		"zero enc half": append(make([]byte, 32), bytes.Repeat([]byte{1}, 32)...),
		"zero id half":  append(bytes.Repeat([]byte{1}, 32), make([]byte, 32)...),
	}
	for name, b := range bad {
		if _, err := KeyFromBytes(b); err == nil {
			t.Errorf("KeyFromBytes(%s) succeeded", name)
		}
	}
}

func TestKeyStringHidesKey(t *testing.T) {
	k := newTestKey(t)
	got := fmt.Sprintf("%v|%+v|%#v|%s", k, k, k, k)
	want := "crypto.Key{redacted}|crypto.Key{redacted}|crypto.Key{redacted}|crypto.Key{redacted}"
	if got != want {
		t.Fatalf("formatting a key printed %q", got)
	}
}

func TestKeysDiffer(t *testing.T) {
	if bytes.Equal(newTestKey(t).Bytes(), newTestKey(t).Bytes()) {
		t.Fatal("two random keys are equal")
	}
}

func BenchmarkSeal(b *testing.B) {
	k := newTestKey(b)
	plain := make([]byte, 1<<20)
	buf := make([]byte, 0, len(plain)+Overhead)
	b.ReportAllocs()
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		k.Seal(buf[:0], plain, nil)
	}
}

func BenchmarkOpen(b *testing.B) {
	k := newTestKey(b)
	sealed := k.Seal(nil, make([]byte, 1<<20), nil)
	buf := make([]byte, 0, len(sealed))
	b.ReportAllocs()
	b.SetBytes(int64(len(sealed) - Overhead))
	for b.Loop() {
		if _, err := k.Open(buf[:0], sealed, nil); err != nil {
			b.Fatal(err)
		}
	}
}
