package repo

import (
	"context"
	"testing"
	"time"

	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/mem"
	"github.com/imagobackup/imago/repo/crypto"
)

// Fixed settings of test repositories.
const (
	// TestPassword opens every repository made by TestRepository.
	TestPassword = "test"
	// TestPolynomial is an irreducible degree-53 polynomial, fixed so that
	// test chunk boundaries are reproducible.
	TestPolynomial = 0x3DA3358B4DC173
)

// TestOption changes the InitOptions of a test repository.
type TestOption func(*InitOptions)

// TestPackSize sets the pack size (at least MinPackSize), so that tests make
// many packs from little data.
func TestPackSize(n int) TestOption { return func(o *InitOptions) { o.PackSize = n } }

// TestCompression sets the compression level.
func TestCompression(l pack.CompressionLevel) TestOption {
	return func(o *InitOptions) { o.Compression = l }
}

// TestClock sets the clock that locks use.
func TestClock(now func() time.Time) TestOption { return func(o *InitOptions) { o.Now = now } }

// TestRepository returns a new repository in memory, opened with
// TestPassword, with crypto.TestKDF and TestPolynomial.
func TestRepository(t testing.TB, opts ...TestOption) *Repository {
	t.Helper()
	return TestRepositoryWithBackend(t, mem.New(), opts...)
}

// TestRepositoryWithBackend initializes a repository on be like
// TestRepository does.
func TestRepositoryWithBackend(t testing.TB, be backend.Backend, opts ...TestOption) *Repository {
	t.Helper()
	o := InitOptions{
		KDF:        crypto.TestKDF,
		Polynomial: TestPolynomial,
		Host:       "testhost",
		Username:   "tester",
	}
	for _, opt := range opts {
		opt(&o)
	}
	r, err := Init(context.Background(), be, TestPassword, o)
	if err != nil {
		t.Fatalf("init test repository: %v", err)
	}
	return r
}
