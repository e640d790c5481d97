package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func newTestKeyFile(t testing.TB, k *Key, password string) *KeyFile {
	t.Helper()
	kf, err := NewKeyFile(k, password, TestKDF, "host1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	return kf
}

func encodeTestKeyFile(t testing.TB, kf *KeyFile) []byte {
	t.Helper()
	b, err := EncodeKeyFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameKey(a, b *Key) bool { return bytes.Equal(a.Bytes(), b.Bytes()) }

func TestKeyFileRoundTrip(t *testing.T) {
	k := newTestKey(t)
	before := time.Now().Add(-time.Second)
	kf := newTestKeyFile(t, k, "correct horse")
	b := encodeTestKeyFile(t, kf)

	dec, err := DecodeKeyFile(b)
	if err != nil {
		t.Fatalf("DecodeKeyFile: %v", err)
	}
	if dec.Host != "host1" || dec.Username != "alice" || dec.Params != TestKDF || dec.KDF != "argon2id" || dec.Version != 1 {
		t.Fatalf("decoded fields differ: %+v", dec)
	}
	if dec.Created.Before(before) || dec.Created.After(time.Now()) {
		t.Fatalf("created = %v, not now", dec.Created)
	}
	got, err := dec.Open("correct horse")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !sameKey(got, k) {
		t.Fatal("opened key differs from the sealed key")
	}
}

func TestKeyFileJSONFields(t *testing.T) {
	kf := newTestKeyFile(t, newTestKey(t), "pw")
	var m map[string]any
	if err := json.Unmarshal(encodeTestKeyFile(t, kf), &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"version", "created", "host", "username", "kdf", "params", "salt", "data"} {
		if _, ok := m[f]; !ok {
			t.Errorf("field %q missing", f)
		}
	}
	if len(m) != 8 {
		t.Errorf("key file has %d fields, want 8: %v", len(m), m)
	}
	if _, err := time.Parse(time.RFC3339, m["created"].(string)); err != nil {
		t.Errorf("created is not RFC 3339: %v", err)
	}
	salt, err := base64.StdEncoding.DecodeString(m["salt"].(string))
	if err != nil || len(salt) != SaltSize {
		t.Errorf("salt = %q: %d bytes, %v", m["salt"], len(salt), err)
	}
	params := m["params"].(map[string]any)
	if params["t"] != 1.0 || params["m"] != 64.0 || params["p"] != 1.0 {
		t.Errorf("params = %v, want t, m, p of TestKDF", params)
	}
}

func TestKeyFileWrongPassword(t *testing.T) {
	kf := newTestKeyFile(t, newTestKey(t), "secret")
	for _, pw := range []string{"", "Secret", "secret ", "secre"} {
		if _, err := kf.Open(pw); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("Open(%q) = %v, want ErrWrongPassword", pw, err)
		}
	}
}

func TestKeyFileTampered(t *testing.T) {
	kf := newTestKeyFile(t, newTestKey(t), "pw")
	tests := []struct {
		name   string
		change func(kf *KeyFile)
	}{
		{"data flipped", func(kf *KeyFile) { kf.Data[NonceSize+5] ^= 1 }},
		{"nonce flipped", func(kf *KeyFile) { kf.Data[0] ^= 1 }},
		{"salt flipped", func(kf *KeyFile) { kf.Salt[0] ^= 1 }},
		{"params changed", func(kf *KeyFile) { kf.Params.Time++ }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *kf
			c.Data, c.Salt = bytes.Clone(kf.Data), bytes.Clone(kf.Salt)
			tt.change(&c)
			if _, err := c.Open("pw"); !errors.Is(err, ErrWrongPassword) {
				t.Fatalf("Open = %v, want ErrWrongPassword", err)
			}
		})
	}
}

func TestTwoKeyFilesOneMasterKey(t *testing.T) {
	k := newTestKey(t)
	a := newTestKeyFile(t, k, "first")
	b := newTestKeyFile(t, k, "second")
	if bytes.Equal(a.Salt, b.Salt) || bytes.Equal(a.Data, b.Data) {
		t.Fatal("two key files share salt or sealed data")
	}
	ka, err := a.Open("first")
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.Open("second")
	if err != nil {
		t.Fatal(err)
	}
	if !sameKey(ka, kb) || !sameKey(ka, k) {
		t.Fatal("the two key files hold different master keys")
	}
	if _, err := a.Open("second"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("the second password opened the first key file: %v", err)
	}
	// A message sealed through one key file opens through the other.
	msg, err := kb.Open(nil, ka.Seal(nil, []byte("snapshot"), nil), nil)
	if err != nil || string(msg) != "snapshot" {
		t.Fatalf("Open = %q, %v", msg, err)
	}
}

func TestNewKeyFileRejectsBadParams(t *testing.T) {
	_, err := NewKeyFile(newTestKey(t), "pw", KDFParams{Time: 0, Memory: 64, Threads: 1}, "", "")
	if !errors.Is(err, ErrInvalidKDFParams) {
		t.Fatalf("NewKeyFile = %v, want ErrInvalidKDFParams", err)
	}
}

func TestKDFParamsValidate(t *testing.T) {
	tests := []struct {
		name string
		p    KDFParams
		ok   bool
	}{
		{"default", DefaultKDF, true},
		{"test", TestKDF, true},
		{"limits", KDFParams{Time: MaxKDFTime, Memory: MaxKDFMemory, Threads: 255}, true},
		{"minimum memory per lane", KDFParams{Time: 1, Memory: 32, Threads: 4}, true},
		{"zero", KDFParams{}, false},
		{"zero time", KDFParams{Time: 0, Memory: 64, Threads: 1}, false},
		{"time too high", KDFParams{Time: MaxKDFTime + 1, Memory: 64, Threads: 1}, false},
		{"time absurd", KDFParams{Time: 1 << 31, Memory: 64, Threads: 1}, false},
		{"zero threads", KDFParams{Time: 1, Memory: 64, Threads: 0}, false},
		{"memory below 8 KiB per lane", KDFParams{Time: 1, Memory: 31, Threads: 4}, false},
		{"memory above 4 GiB", KDFParams{Time: 1, Memory: MaxKDFMemory + 1, Threads: 1}, false},
		{"memory absurd", KDFParams{Time: 1, Memory: 1<<32 - 1, Threads: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidKDFParams) {
				t.Fatalf("Validate = %v, want ErrInvalidKDFParams", err)
			}
		})
	}
}

// validKeyFileJSON returns the fields of a valid key file as a map that a
// test can change before encoding it.
func validKeyFileJSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(encodeTestKeyFile(t, newTestKeyFile(t, newTestKey(t), "pw")), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDecodeKeyFileRejects(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name   string
		change func(m map[string]any)
		field  string
		is     error
	}{
		{"version 0", func(m map[string]any) { m["version"] = 0 }, "version", nil},
		{"version 2", func(m map[string]any) { m["version"] = 2 }, "version", nil},
		{"version missing", func(m map[string]any) { delete(m, "version") }, "version", nil},
		{"kdf scrypt", func(m map[string]any) { m["kdf"] = "scrypt" }, "kdf", nil},
		{"kdf missing", func(m map[string]any) { delete(m, "kdf") }, "kdf", nil},
		{"salt short", func(m map[string]any) { m["salt"] = b64(SaltSize - 1) }, "salt", nil},
		{"salt long", func(m map[string]any) { m["salt"] = b64(SaltSize + 1) }, "salt", nil},
		{"salt missing", func(m map[string]any) { delete(m, "salt") }, "salt", nil},
		{"data short", func(m map[string]any) { m["data"] = b64(sealedKeySize - 1) }, "data", nil},
		{"data long", func(m map[string]any) { m["data"] = b64(sealedKeySize + 1) }, "data", nil},
		{"data null", func(m map[string]any) { m["data"] = nil }, "data", nil},
		{"params missing", func(m map[string]any) { delete(m, "params") }, "params", ErrInvalidKDFParams},
		{"params huge memory", func(m map[string]any) { m["params"] = map[string]any{"t": 1, "m": 1 << 30, "p": 1} }, "params", ErrInvalidKDFParams},
		{"params huge time", func(m map[string]any) { m["params"] = map[string]any{"t": 1 << 30, "m": 64, "p": 1} }, "params", ErrInvalidKDFParams},
		{"params zero threads", func(m map[string]any) { m["params"] = map[string]any{"t": 1, "m": 64, "p": 0} }, "params", ErrInvalidKDFParams},
		{"params threads overflow", func(m map[string]any) { m["params"] = map[string]any{"t": 1, "m": 64, "p": 256} }, "", nil},
		{"params negative", func(m map[string]any) { m["params"] = map[string]any{"t": -1, "m": 64, "p": 1} }, "", nil},
		{"unknown field", func(m map[string]any) { m["comment"] = "hi" }, "", nil},
		{"salt not base64", func(m map[string]any) { m["salt"] = "!!" }, "", nil},
		{"created not a time", func(m map[string]any) { m["created"] = "yesterday" }, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validKeyFileJSON(t)
			tt.change(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeKeyFile(b)
			var kfe *KeyFileError
			if !errors.As(err, &kfe) {
				t.Fatalf("DecodeKeyFile = %v, want a *KeyFileError", err)
			}
			if kfe.Field != tt.field {
				t.Fatalf("error names field %q, want %q: %v", kfe.Field, tt.field, err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("DecodeKeyFile = %v, want it to wrap %v", err, tt.is)
			}
		})
	}
}

func TestDecodeKeyFileRejectsBytes(t *testing.T) {
	valid := encodeTestKeyFile(t, newTestKeyFile(t, newTestKey(t), "pw"))
	tests := map[string][]byte{
		"empty":         nil,
		"null":          []byte("null"),
		"array":         []byte("[]"),
		"truncated":     valid[:len(valid)/2],
		"trailing data": append(bytes.Clone(valid), "{}"...),
		"two objects":   append(bytes.Clone(valid), valid...),
		"oversized":     append(bytes.Clone(valid), bytes.Repeat([]byte(" "), maxKeyFileSize)...),
		"not json":      []byte("imago key"),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			var kfe *KeyFileError
			if _, err := DecodeKeyFile(b); !errors.As(err, &kfe) {
				t.Fatalf("DecodeKeyFile = %v, want a *KeyFileError", err)
			}
		})
	}
	if _, err := DecodeKeyFile(append(bytes.Clone(valid), " \n\t"...)); err != nil {
		t.Fatalf("trailing white space rejected: %v", err)
	}
}

func TestEncodeKeyFileRejectsInvalid(t *testing.T) {
	kf := newTestKeyFile(t, newTestKey(t), "pw")
	kf.Salt = kf.Salt[:10]
	var kfe *KeyFileError
	if _, err := EncodeKeyFile(kf); !errors.As(err, &kfe) || kfe.Field != "salt" {
		t.Fatalf("EncodeKeyFile = %v, want a *KeyFileError for salt", err)
	}
}

func TestKeyFileOpenRejectsMalformed(t *testing.T) {
	// Open checks the fields itself, so a KeyFile built by hand cannot make
	// it slice out of bounds or run argon2 with hostile parameters.
	kf := newTestKeyFile(t, newTestKey(t), "pw")
	kf.Data = kf.Data[:NonceSize-1]
	var kfe *KeyFileError
	if _, err := kf.Open("pw"); !errors.As(err, &kfe) {
		t.Fatalf("Open = %v, want a *KeyFileError", err)
	}
	kf = newTestKeyFile(t, newTestKey(t), "pw")
	kf.Params.Memory = 1 << 31
	if _, err := kf.Open("pw"); !errors.Is(err, ErrInvalidKDFParams) {
		t.Fatalf("Open = %v, want ErrInvalidKDFParams", err)
	}
}

func TestKeyFileErrorMessage(t *testing.T) {
	_, err := DecodeKeyFile([]byte(`{"version":7}`))
	if err == nil || !strings.Contains(err.Error(), "version") || !strings.Contains(err.Error(), "7") {
		t.Fatalf("error %q does not name the version", err)
	}
}

func FuzzDecodeKeyFile(f *testing.F) {
	k, err := KeyFromBytes(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		f.Fatal(err)
	}
	kf := newTestKeyFile(f, k, "pw")
	valid := encodeTestKeyFile(f, kf)
	f.Add(valid)
	f.Add([]byte("{}"))
	f.Add([]byte("null"))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","params":{"t":1,"m":8,"p":1}}`))
	f.Add(bytes.Replace(valid, []byte(`"version": 1`), []byte(`"version": 2`), 1))
	f.Add(bytes.Replace(valid, []byte(`"t": 1`), []byte(`"t": 4294967295`), 1))
	f.Add(valid[:len(valid)-10])

	f.Fuzz(func(t *testing.T, b []byte) {
		kf, err := DecodeKeyFile(b)
		if err != nil {
			var kfe *KeyFileError
			if !errors.As(err, &kfe) {
				t.Fatalf("error is not a *KeyFileError: %v", err)
			}
			return
		}
		// Whatever decodes re-encodes, and the encoding is stable.
		enc, err := EncodeKeyFile(kf)
		if err != nil {
			t.Fatalf("decoded key file does not encode: %v", err)
		}
		kf2, err := DecodeKeyFile(enc)
		if err != nil {
			t.Fatalf("re-encoded key file does not decode: %v", err)
		}
		enc2, err := EncodeKeyFile(kf2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %v\n%s\n%s", err, enc, enc2)
		}
	})
}

func BenchmarkDefaultKDF(b *testing.B) {
	salt := make([]byte, SaltSize)
	b.ReportAllocs()
	for b.Loop() {
		deriveKey("password", salt, DefaultKDF)
	}
}
