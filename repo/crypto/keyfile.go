package crypto

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// KeyFileVersion is the only key file version this package reads and
	// writes.
	KeyFileVersion = 1

	// KDFArgon2id names argon2id in the "kdf" field of a key file.
	KDFArgon2id = "argon2id"

	// SaltSize is the length of a key file's random argon2id salt.
	SaltSize = 32

	// sealedKeySize is the length of a key file's "data": the master key
	// sealed with the password-derived key.
	sealedKeySize = NonceSize + KeySize + TagSize

	// maxKeyFileSize bounds what DecodeKeyFile parses. A real key file is
	// about 400 bytes plus the host and user names.
	maxKeyFileSize = 64 << 10
)

// keyFileAD is the associated data of the sealed master key in a key file
// of version 1.
var keyFileAD = []byte("imago key v1")

// ErrWrongPassword is returned by KeyFile.Open when the password does not
// open the key file. A damaged "data" field gives the same error: the two
// cannot be told apart.
var ErrWrongPassword = errors.New("crypto: wrong password")

// KeyFileError reports a key file that is malformed or of an unsupported
// kind, found before any password is tried.
type KeyFileError struct {
	Field  string // the JSON field at fault, or "" for the whole file
	Reason string
	Err    error // an underlying error (JSON syntax, ErrInvalidKDFParams), or nil
}

func (e *KeyFileError) Error() string {
	msg := "crypto: invalid key file"
	if e.Field != "" {
		msg += ": field " + e.Field
	}
	msg += ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *KeyFileError) Unwrap() error { return e.Err }

// KeyFile holds a master key sealed with a password. It is stored as
// plaintext JSON; see docs/FORMAT.md for the rules.
type KeyFile struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	Host     string    `json:"host"`
	Username string    `json:"username"`
	KDF      string    `json:"kdf"`
	Params   KDFParams `json:"params"`
	Salt     []byte    `json:"salt"` // SaltSize random bytes (base64 in JSON)
	Data     []byte    `json:"data"` // the sealed master key (base64 in JSON)
}

// NewKeyFile seals k with password, using argon2id with p and a fresh random
// salt. host and user are recorded to help people tell key files apart.
func NewKeyFile(k *Key, password string, p KDFParams, host, user string) (*KeyFile, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	kf := &KeyFile{
		Version:  KeyFileVersion,
		Created:  time.Now().UTC().Truncate(time.Second),
		Host:     host,
		Username: user,
		KDF:      KDFArgon2id,
		Params:   p,
		Salt:     make([]byte, SaltSize),
	}
	if _, err := rand.Read(kf.Salt); err != nil {
		return nil, fmt.Errorf("crypto: random salt: %w", err)
	}
	aead, err := passwordAEAD(password, kf.Salt, p)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, NonceSize, sealedKeySize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("crypto: random nonce: %w", err)
	}
	master := k.Bytes()
	kf.Data = aead.Seal(nonce, nonce, master, keyFileAD)
	clear(master)
	return kf, nil
}

// Open derives the key of password and returns the master key sealed in kf.
// A password that does not open it gives ErrWrongPassword; a malformed kf a
// *KeyFileError.
func (kf *KeyFile) Open(password string) (*Key, error) {
	if err := kf.validate(); err != nil {
		return nil, err
	}
	aead, err := passwordAEAD(password, kf.Salt, kf.Params)
	if err != nil {
		return nil, err
	}
	master, err := aead.Open(nil, kf.Data[:NonceSize], kf.Data[NonceSize:], keyFileAD)
	if err != nil {
		return nil, ErrWrongPassword
	}
	defer clear(master)
	k, err := KeyFromBytes(master)
	if err != nil {
		// Authentic but unusable: only a buggy writer produces this.
		return nil, &KeyFileError{Field: "data", Reason: "sealed master key is unusable", Err: err}
	}
	return k, nil
}

// passwordAEAD returns XChaCha20-Poly1305 keyed with the argon2id key of
// password.
func passwordAEAD(password string, salt []byte, p KDFParams) (cipher.AEAD, error) {
	dk := deriveKey(password, salt, p)
	defer clear(dk)
	aead, err := chacha20poly1305.NewX(dk)
	if err != nil {
		return nil, fmt.Errorf("crypto: %w", err) // unreachable: dk has the right size
	}
	return aead, nil
}

// validate checks every field a reader depends on.
func (kf *KeyFile) validate() error {
	switch {
	case kf.Version != KeyFileVersion:
		return &KeyFileError{Field: "version", Reason: fmt.Sprintf("unsupported version %d, want %d", kf.Version, KeyFileVersion)}
	case kf.KDF != KDFArgon2id:
		return &KeyFileError{Field: "kdf", Reason: fmt.Sprintf("unsupported KDF %q, want %q", kf.KDF, KDFArgon2id)}
	case len(kf.Salt) != SaltSize:
		return &KeyFileError{Field: "salt", Reason: fmt.Sprintf("%d bytes, want %d", len(kf.Salt), SaltSize)}
	case len(kf.Data) != sealedKeySize:
		return &KeyFileError{Field: "data", Reason: fmt.Sprintf("%d bytes, want %d", len(kf.Data), sealedKeySize)}
	}
	if err := kf.Params.Validate(); err != nil {
		return &KeyFileError{Field: "params", Reason: "rejected", Err: err}
	}
	return nil
}

// EncodeKeyFile returns the JSON form of kf, indented and ending in a
// newline. It refuses a kf that DecodeKeyFile would reject.
func EncodeKeyFile(kf *KeyFile) ([]byte, error) {
	if err := kf.validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("crypto: encode key file: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodeKeyFile parses and checks a key file. It is strict: unknown fields,
// trailing data, an unsupported version or KDF, a salt or sealed key of the
// wrong length, and unbounded KDF parameters all give a *KeyFileError.
func DecodeKeyFile(b []byte) (*KeyFile, error) {
	if len(b) > maxKeyFileSize {
		return nil, &KeyFileError{Reason: fmt.Sprintf("%d bytes, more than %d", len(b), maxKeyFileSize)}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	kf := &KeyFile{}
	if err := dec.Decode(kf); err != nil {
		return nil, &KeyFileError{Reason: "not a key file", Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &KeyFileError{Reason: "data after the JSON object"}
	}
	if err := kf.validate(); err != nil {
		return nil, err
	}
	return kf, nil
}
