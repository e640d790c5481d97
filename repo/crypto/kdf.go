package crypto

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// KDFParams are the argon2id cost parameters of a key file. They are read
// from untrusted files: call Validate before deriving.
type KDFParams struct {
	Time    uint32 `json:"t"` // passes over the memory
	Memory  uint32 `json:"m"` // KiB
	Threads uint8  `json:"p"` // lanes, computed in parallel
}

// DefaultKDF is used for new key files. Measured on the 2-core AMD EPYC build
// machine (idle, best of 3): m=256 MiB, p=2 took 0.53 s at t=6; argon2id's
// cost is about proportional to t×m, so m=32 MiB, t=40 costs about 0.45 s.
// The memory is held by every command while it opens the repository, so it
// sets a floor under each command's peak memory: 32 MiB (as much as restic's
// scrypt uses) keeps imago usable on small machines, and the time cost keeps
// a guess at about half a second of two cores.
var DefaultKDF = KDFParams{Time: 40, Memory: 32 << 10, Threads: 2}

// TestKDF is cheap (well under a millisecond) and offers no protection: use it
// only in tests.
var TestKDF = KDFParams{Time: 1, Memory: 64, Threads: 1}

// Limits enforced by Validate, so that a hostile key file cannot make the
// client allocate or spin without bound before the password is even checked.
const (
	// MaxKDFMemory is 4 GiB, in KiB: more than any machine should be asked
	// to spend on opening a repository.
	MaxKDFMemory = 4 << 20
	// MaxKDFTime is 100 passes; at 256 MiB that is about 9 s here.
	MaxKDFTime = 100
)

// derivedKeySize is the length of the key argon2id derives from a password:
// an XChaCha20-Poly1305 key.
const derivedKeySize = encKeySize

// ErrInvalidKDFParams is wrapped by the error KDFParams.Validate returns.
var ErrInvalidKDFParams = errors.New("crypto: invalid KDF parameters")

// Validate reports whether p is usable and bounded: 1 <= Time <= MaxKDFTime,
// Threads >= 1, 8*Threads <= Memory <= MaxKDFMemory (argon2's minimum is
// 8 KiB per lane). The error wraps ErrInvalidKDFParams.
func (p KDFParams) Validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxKDFTime:
		return fmt.Errorf("%w: time %d outside [1, %d]", ErrInvalidKDFParams, p.Time, MaxKDFTime)
	case p.Threads < 1:
		return fmt.Errorf("%w: zero threads", ErrInvalidKDFParams)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > MaxKDFMemory:
		return fmt.Errorf("%w: memory %d KiB outside [%d, %d]", ErrInvalidKDFParams, p.Memory, 8*uint32(p.Threads), MaxKDFMemory)
	}
	return nil
}

// deriveKey returns the argon2id key of password and salt under valid p.
func deriveKey(password string, salt []byte, p KDFParams) []byte {
	return argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, derivedKeySize)
}
