package chunk

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// testPol is a fixed irreducible polynomial of degree 53, so test cuts are
// reproducible.
const testPol = 0x3DA3358B4DC173

// otherPol is a second irreducible polynomial of degree 53.
const otherPol = 0x2793634EFC8BC7

// smallParams cut about every 16 KiB, so tests see many chunks in a few MiB.
var smallParams = Params{Polynomial: testPol, Min: 8 * kiB, Max: 64 * kiB, AverageBits: 13}

func withPol(p Params, pol uint64) Params {
	p.Polynomial = pol
	return p
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

// split returns all chunks of data, each in its own slice.
func split(t testing.TB, s *Splitter) [][]byte {
	t.Helper()
	var chunks [][]byte
	for {
		c, err := s.Next(nil)
		if err == io.EOF {
			return chunks
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		chunks = append(chunks, c)
	}
}

func splitBytes(t testing.TB, data []byte, p Params) [][]byte {
	t.Helper()
	return split(t, NewSplitter(bytes.NewReader(data), p))
}

// checkChunks fails unless chunks concatenate to data and all but the last
// lie within [p.Min, p.Max].
func checkChunks(t testing.TB, data []byte, chunks [][]byte, p Params) {
	t.Helper()
	if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
		t.Fatalf("concatenation of %d chunks (%d bytes) differs from the %d-byte input", len(chunks), len(got), len(data))
	}
	for i, c := range chunks {
		if len(c) == 0 {
			t.Fatalf("chunk %d is empty", i)
		}
		if uint(len(c)) > p.Max || (i < len(chunks)-1 && uint(len(c)) < p.Min) {
			t.Fatalf("chunk %d of %d has %d bytes, outside [%d, %d]", i, len(chunks), len(c), p.Min, p.Max)
		}
	}
}

func lengths(chunks [][]byte) []int {
	l := make([]int, len(chunks))
	for i, c := range chunks {
		l[i] = len(c)
	}
	return l
}

func equalLengths(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
	}
	return true
}

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		ok   bool
	}{
		{"file params", withPol(FileParams, testPol), true},
		{"small params", smallParams, true},
		{"min equals max", Params{Polynomial: testPol, Min: 4096, Max: 4096, AverageBits: 12}, true},
		{"smallest allowed", Params{Polynomial: testPol, Min: MinChunkSize, Max: MinChunkSize, AverageBits: 6}, true},
		{"polynomial unset", FileParams, false},
		{"polynomial degree too low", withPol(FileParams, 0x11b), false},
		{"polynomial degree too high", withPol(FileParams, 1<<60|1), false},
		{"reducible polynomial", withPol(FileParams, 1<<53), false},
		{"min below window", Params{Polynomial: testPol, Min: 63, Max: 4096, AverageBits: 10}, false},
		{"max above limit", Params{Polynomial: testPol, Min: 512 * kiB, Max: MaxChunkSize + 1, AverageBits: 20}, false},
		{"min above max", Params{Polynomial: testPol, Min: 8192, Max: 4096, AverageBits: 10}, false},
		{"average bits too low", Params{Polynomial: testPol, Min: 4096, Max: 8192, AverageBits: 5}, false},
		{"average above max", Params{Polynomial: testPol, Min: 512 * kiB, Max: 8 * miB, AverageBits: 24}, false},
		{"average bits absurd", Params{Polynomial: testPol, Min: 512 * kiB, Max: 8 * miB, AverageBits: 1000}, false},
		{"average bits negative", Params{Polynomial: testPol, Min: 512 * kiB, Max: 8 * miB, AverageBits: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("Validate = %v, want ErrInvalidParams", err)
			}
		})
	}
}

func TestNewSplitterInvalidParams(t *testing.T) {
	s := NewSplitter(bytes.NewReader([]byte("data")), FileParams) // no polynomial
	if _, err := s.Next(nil); !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("Next = %v, want ErrInvalidParams", err)
	}
	s.Reset(bytes.NewReader([]byte("more")))
	if _, err := s.Next(nil); !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("Next after Reset = %v, want ErrInvalidParams", err)
	}
}

func TestRandomPolynomial(t *testing.T) {
	a, err := RandomPolynomial()
	if err != nil {
		t.Fatal(err)
	}
	b, err := RandomPolynomial()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatalf("two random polynomials are equal: %#x", a)
	}
	for _, pol := range []uint64{a, b} {
		if err := withPol(FileParams, pol).Validate(); err != nil {
			t.Errorf("random polynomial %#x: %v", pol, err)
		}
	}
}

func TestSplitterBoundsAndConcatenation(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		p    Params
	}{
		{"small params random", randomBytes(1, 3*miB+123), smallParams},
		{"file params random", randomBytes(2, 20*miB+7), withPol(FileParams, testPol)},
		{"max cuts dominate", randomBytes(3, 1*miB), Params{Polynomial: testPol, Min: 1024, Max: 4096, AverageBits: 12}},
		{"min equals max", randomBytes(4, 100_000), Params{Polynomial: testPol, Min: 4096, Max: 4096, AverageBits: 12}},
		{"input shorter than min", randomBytes(5, 5000), smallParams},
		{"one byte", []byte{42}, smallParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks := splitBytes(t, tt.data, tt.p)
			checkChunks(t, tt.data, chunks, tt.p)
			if uint(len(tt.data)) > 4*tt.p.Max && len(chunks) < 4 {
				t.Fatalf("only %d chunks for %d bytes", len(chunks), len(tt.data))
			}
		})
	}
}

func TestSplitterFixedSizeWhenMinEqualsMax(t *testing.T) {
	p := Params{Polynomial: testPol, Min: 4096, Max: 4096, AverageBits: 12}
	chunks := splitBytes(t, randomBytes(6, 10*4096+5), p)
	if len(chunks) != 11 || len(chunks[10]) != 5 {
		t.Fatalf("chunk lengths %v, want ten of 4096 and one of 5", lengths(chunks))
	}
}

func TestSplitterEmptyInput(t *testing.T) {
	s := NewSplitter(bytes.NewReader(nil), smallParams)
	for i := range 2 {
		if c, err := s.Next(nil); err != io.EOF {
			t.Fatalf("call %d: Next = %d bytes, %v; want io.EOF", i, len(c), err)
		}
	}
}

func TestSplitterEOFAfterLastChunk(t *testing.T) {
	s := NewSplitter(bytes.NewReader(randomBytes(7, 100_000)), smallParams)
	split(t, s)
	if _, err := s.Next(nil); err != io.EOF {
		t.Fatalf("Next after the end = %v, want io.EOF", err)
	}
}

func TestSplitterZeros(t *testing.T) {
	// Inside a zero run the fingerprint is constant, so the cuts fall at
	// exactly Min: every zero run of the same length gives the same chunks.
	p := smallParams
	data := make([]byte, 10*p.Min+100)
	chunks := splitBytes(t, data, p)
	checkChunks(t, data, chunks, p)
	for i, c := range chunks[:len(chunks)-1] {
		if uint(len(c)) != p.Min {
			t.Fatalf("zero chunk %d has %d bytes, want %d", i, len(c), p.Min)
		}
	}
}

func TestSplitterDeterministic(t *testing.T) {
	data := randomBytes(8, 2*miB)
	a := splitBytes(t, data, smallParams)
	b := splitBytes(t, data, smallParams)
	if !equalLengths(a, b) {
		t.Fatalf("two runs cut differently:\n%v\n%v", lengths(a), lengths(b))
	}
}

func TestSplitterPolynomialChangesCuts(t *testing.T) {
	data := randomBytes(9, 2*miB)
	a := splitBytes(t, data, smallParams)
	b := splitBytes(t, data, withPol(smallParams, otherPol))
	checkChunks(t, data, b, smallParams)
	if equalLengths(a, b) {
		t.Fatalf("different polynomials cut the same: %v", lengths(a))
	}
}

func TestSplitterResetMatchesNew(t *testing.T) {
	first := randomBytes(10, 1*miB)
	second := randomBytes(11, 2*miB+17)
	want := splitBytes(t, second, smallParams)

	tests := []struct {
		name    string
		prepare func(s *Splitter)
	}{
		{"after a whole stream", func(s *Splitter) { split(t, s) }},
		{"in the middle of a stream", func(s *Splitter) {
			if _, err := s.Next(nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"before reading", func(*Splitter) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSplitter(bytes.NewReader(first), smallParams)
			tt.prepare(s)
			s.Reset(bytes.NewReader(second))
			got := split(t, s)
			checkChunks(t, second, got, smallParams)
			if !equalLengths(got, want) {
				t.Fatalf("reset splitter cut %v, new splitter cut %v", lengths(got), lengths(want))
			}
		})
	}
}

func TestSplitterShiftResistance(t *testing.T) {
	data := randomBytes(12, 4*miB)
	orig := splitBytes(t, data, smallParams)
	known := make(map[string]bool, len(orig))
	for _, c := range orig {
		known[string(c)] = true
	}
	insert := randomBytes(13, 1000)

	tests := []struct {
		name     string
		modified []byte
	}{
		{"insert at start", append(append([]byte{}, insert...), data...)},
		{"insert in the middle", append(append(append([]byte{}, data[:2*miB]...), insert...), data[2*miB:]...)},
		{"delete at start", data[1000:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks := splitBytes(t, tt.modified, smallParams)
			checkChunks(t, tt.modified, chunks, smallParams)
			fresh := 0
			for _, c := range chunks {
				if !known[string(c)] {
					fresh++
				}
			}
			// An edit changes the chunk holding it and, until the cuts
			// resynchronise, rarely more than one or two after it.
			if fresh > 3 {
				t.Fatalf("%d of %d chunks are new after a 1000-byte edit", fresh, len(chunks))
			}
		})
	}
}

func TestSplitterBuffer(t *testing.T) {
	data := randomBytes(14, 300_000)
	s := NewSplitter(bytes.NewReader(data), smallParams)
	buf := make([]byte, 0, smallParams.Max)
	var all []byte
	for {
		c, err := s.Next(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if &c[:1][0] != &buf[:1][0] {
			t.Fatal("Next did not use the caller's buffer of capacity Max")
		}
		all = append(all, c...)
	}
	if !bytes.Equal(all, data) {
		t.Fatal("chunks read into a reused buffer differ from the input")
	}

	// A buffer that is too small is grown and still gives the right bytes.
	s.Reset(bytes.NewReader(data))
	c, err := s.Next(make([]byte, 10))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c, data[:len(c)]) {
		t.Fatal("first chunk read into a small buffer differs from the input")
	}
}

func TestSplitterReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(bytes.NewReader(randomBytes(15, 10_000)), iotest.ErrReader(boom))
	s := NewSplitter(r, smallParams)
	var err error
	for err == nil {
		_, err = s.Next(nil)
	}
	if !errors.Is(err, boom) {
		t.Fatalf("Next = %v, want the reader's error", err)
	}
}

func TestSplitterOneByteReads(t *testing.T) {
	// Short reads must not change the cuts.
	data := randomBytes(16, 200_000)
	want := splitBytes(t, data, smallParams)
	got := split(t, NewSplitter(iotest.OneByteReader(bytes.NewReader(data)), smallParams))
	checkChunks(t, data, got, smallParams)
	if !equalLengths(got, want) {
		t.Fatalf("one-byte reads cut %v, full reads cut %v", lengths(got), lengths(want))
	}
}

// fuzzParams builds valid small parameters from fuzzer input (Min up to 319,
// Max up to 1342 bytes), so that inputs of a few KiB already hold many cuts.
func fuzzParams(minSel, spanSel uint16, bitsSel uint8) Params {
	p := Params{Polynomial: testPol, Min: MinChunkSize + uint(minSel%256)}
	p.Max = p.Min + uint(spanSel%1024)
	p.AverageBits = minAverageBits
	for extra := int(bitsSel % 8); extra > 0 && uint(1)<<(p.AverageBits+1) <= p.Max; extra-- {
		p.AverageBits++
	}
	return p
}

func FuzzSplitter(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint16(0), uint8(0))
	f.Add([]byte("hello, world"), uint16(0), uint16(100), uint8(2))
	f.Add(randomBytes(20, 3000), uint16(100), uint16(1000), uint8(3))
	f.Add(make([]byte, 2000), uint16(200), uint16(300), uint8(1))
	f.Add(randomBytes(21, 4000), uint16(255), uint16(1023), uint8(7))
	f.Add(bytes.Repeat([]byte("abc"), 700), uint16(7), uint16(64), uint8(4))

	// Splitters are reused across inputs (a fresh one costs a 512 KiB
	// buffer), which also checks that Reset forgets all earlier state. The
	// map is capped for the same reason.
	reused := make(map[Params]*Splitter)
	f.Fuzz(func(t *testing.T, data []byte, minSel, spanSel uint16, bitsSel uint8) {
		p := fuzzParams(minSel, spanSel, bitsSel)
		if err := p.Validate(); err != nil {
			t.Fatalf("fuzzParams built invalid %+v: %v", p, err)
		}
		s, ok := reused[p]
		if !ok {
			if len(reused) >= 8 {
				clear(reused)
			}
			s = NewSplitter(nil, p)
			reused[p] = s
		}
		s.Reset(bytes.NewReader(data))
		chunks := split(t, s)
		checkChunks(t, data, chunks, p)

		// Abandoning a stream after one chunk must not change the next one.
		s.Reset(bytes.NewReader(data))
		if _, err := s.Next(nil); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		s.Reset(bytes.NewReader(data))
		if again := split(t, s); !equalLengths(again, chunks) {
			t.Fatalf("cuts after an abandoned stream %v, before %v", lengths(again), lengths(chunks))
		}
	})
}

func BenchmarkSplitter(b *testing.B) {
	data := randomBytes(30, 64*miB)
	p := withPol(FileParams, testPol)
	s := NewSplitter(nil, p)
	buf := make([]byte, 0, p.Max)
	r := bytes.NewReader(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r.Reset(data)
		s.Reset(r)
		for {
			c, err := s.Next(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			buf = c
		}
	}
}

func BenchmarkHasher(b *testing.B) {
	data := randomBytes(31, 1*miB)
	h := NewHasher([32]byte{1, 2, 3})
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h.Sum(data)
	}
}
