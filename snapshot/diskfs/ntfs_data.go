package diskfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"www.velocidex.com/golang/go-ntfs/parser"
)

// ErrUnsupportedFile is wrapped when a file is listed but its data is kept
// in a form this package does not decode (an NTFS file encrypted with EFS).
var ErrUnsupportedFile = errors.New("file data not readable")

// ntfsExtent maps n clusters of a file from cluster vcn to disk cluster lcn,
// or reads them as zeros when lcn is -1 (a sparse run).
type ntfsExtent struct{ vcn, n, lcn int64 }

// ntfsFile reads a non-resident $DATA attribute: size bytes, of which
// those past init read as zeros. With unit > 0 the data is compressed in
// units of that many clusters.
type ntfsFile struct {
	f          *ntfsFS
	size, init int64
	ext        []ntfsExtent
	vcns       int64 // clusters the extents cover
	unit       int64
	what       string

	mu sync.Mutex // guards the last decoded compression unit
	// cacheK is the index of cache, a decoded unit (-1 when none).
	cacheK int64
	cache  []byte
}

func (x *ntfsFile) Size() int64 { return x.size }

// openData opens the unnamed $DATA attribute given by its pieces (one
// resident attribute, or non-resident ones each covering a VCN range).
func (f *ntfsFS) openData(as []*parser.NTFS_ATTRIBUTE, what string) (File, error) {
	if as[0].IsResident() {
		if len(as) > 1 {
			return nil, f.corrupt(what, "resident $DATA in %d pieces", len(as))
		}
		c, err := f.resident(as[0], what)
		if err != nil {
			return nil, err
		}
		return &memFile{bytes.NewReader(c)}, nil
	}
	as = slices.Clone(as)
	sort.Slice(as, func(i, j int) bool { return as[i].Runlist_vcn_start() < as[j].Runlist_vcn_start() })
	first := as[0]
	flags := uint64(*first.Flags())
	if flags&ntfsFlagEncrypted != 0 {
		return nil, fmt.Errorf("encrypted (EFS) $DATA: %w", ErrUnsupportedFile)
	}
	size, init, alloc := int64(first.Actual_size()), int64(first.Initialized_size()), int64(first.Allocated_size())
	if size < 0 || alloc < 0 || init < 0 || size > alloc {
		return nil, f.corrupt(what, "$DATA sizes: %d bytes, %d initialized, %d allocated", size, init, alloc)
	}
	x := &ntfsFile{f: f, size: size, init: min(init, size), what: what, cacheK: -1}
	if cu := first.Compression_unit_size(); flags&ntfsFlagCompressed != 0 && cu != 0 {
		// NTFS compresses only with clusters up to 4 KiB, in units of 16
		// clusters; larger units are accepted up to 256 clusters (1 MiB).
		if f.cs > 4096 || cu > 8 {
			return nil, fmt.Errorf("compressed $DATA with %d-byte clusters and units of 2^%d clusters: %w", f.cs, cu, ErrUnsupportedFile)
		}
		x.unit = 1 << cu
	}
	next := int64(0)
	for _, a := range as {
		if a.IsResident() {
			return nil, f.corrupt(what, "resident and non-resident $DATA pieces")
		}
		start, end := int64(a.Runlist_vcn_start()), int64(a.Runlist_vcn_end())
		if start != next {
			return nil, f.corrupt(what, "$DATA piece starts at cluster %d, want %d", start, next)
		}
		for _, r := range a.RunList() {
			if r.Length <= 0 || r.Length > f.clusters {
				return nil, f.corrupt(what, "run of %d clusters", r.Length)
			}
			lcn := r.Offset
			if r.RelativeUrnOffset == 0 {
				lcn = -1
			} else if lcn < 0 || lcn > f.clusters-r.Length {
				return nil, f.corrupt(what, "run of %d clusters at cluster %d outside the volume's %d", r.Length, lcn, f.clusters)
			}
			x.ext = append(x.ext, ntfsExtent{vcn: next, n: r.Length, lcn: lcn})
			next += r.Length
			if len(x.ext) > ntfsMaxExtents {
				return nil, f.corrupt(what, "more than %d runs", ntfsMaxExtents)
			}
		}
		if next != end+1 {
			return nil, f.corrupt(what, "runs of the $DATA piece at cluster %d end at %d, its header says %d", start, next, end+1)
		}
	}
	x.vcns = next
	if next*f.cs < size {
		return nil, f.corrupt(what, "runs cover %d bytes of %d", next*f.cs, size)
	}
	return x, nil
}

func (x *ntfsFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= x.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), x.size-off)]
	done := 0
	for done < len(want) {
		pos := off + int64(done)
		if pos >= x.init {
			clear(want[done:])
			done = len(want)
			break
		}
		b := want[done:min(int64(len(want)), x.init-off)]
		var n int
		var err error
		if x.unit > 0 {
			n, err = x.readUnit(b, pos)
		} else {
			n, err = x.readPlain(b, pos)
		}
		done += n
		if err != nil {
			return done, err
		}
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// find returns the index of the extent holding cluster vcn.
func (x *ntfsFile) find(vcn int64) (int, error) {
	i := sort.Search(len(x.ext), func(i int) bool { return x.ext[i].vcn+x.ext[i].n > vcn })
	if i == len(x.ext) || x.ext[i].vcn > vcn {
		return 0, x.f.corrupt(x.what, "no run for cluster %d", vcn)
	}
	return i, nil
}

// readPlain reads from pos into b up to the end of one extent.
func (x *ntfsFile) readPlain(b []byte, pos int64) (int, error) {
	cs := x.f.cs
	i, err := x.find(pos / cs)
	if err != nil {
		return 0, err
	}
	e := x.ext[i]
	in := pos - e.vcn*cs
	n := int(min(int64(len(b)), e.n*cs-in))
	if e.lcn < 0 {
		clear(b[:n])
		return n, nil
	}
	if err := readFull(x.f.r, b[:n], e.lcn*cs+in); err != nil {
		return 0, err
	}
	return n, nil
}

// readUnit reads from pos into b up to the end of one compression unit.
func (x *ntfsFile) readUnit(b []byte, pos int64) (int, error) {
	ub := x.unit * x.f.cs
	k := pos / ub
	x.mu.Lock()
	data := x.cache
	if x.cacheK != k {
		data = nil
	}
	x.mu.Unlock()
	if data == nil {
		var err error
		if data, err = x.decodeUnit(k); err != nil {
			return 0, err
		}
		x.mu.Lock()
		x.cacheK, x.cache = k, data
		x.mu.Unlock()
	}
	return copy(b, data[pos-k*ub:]), nil
}

// decodeUnit returns compression unit k decoded. As in NTFS (and
// ntfs-3g): a unit without sparse clusters is stored as is, a unit of
// only sparse clusters is zeros, and otherwise its allocated clusters,
// which come first, hold LZNT1 data.
func (x *ntfsFile) decodeUnit(k int64) ([]byte, error) {
	cs := x.f.cs
	out := make([]byte, x.unit*cs)
	v0, v1 := k*x.unit, min((k+1)*x.unit, x.vcns)
	type piece struct{ lcn, n int64 }
	var data []piece
	holes, stored := int64(0), int64(0)
	for v := v0; v < v1; {
		i, err := x.find(v)
		if err != nil {
			return nil, err
		}
		e := x.ext[i]
		n := min(e.vcn+e.n, v1) - v
		if e.lcn < 0 {
			holes += n
		} else {
			if holes > 0 {
				return nil, x.f.corrupt(x.what, "compression unit %d has data after sparse clusters", k)
			}
			data = append(data, piece{e.lcn + v - e.vcn, n})
			stored += n
		}
		v += n
	}
	if stored == 0 {
		return out, nil
	}
	buf := out
	if holes > 0 {
		buf = make([]byte, stored*cs)
	}
	at := int64(0)
	for _, d := range data {
		if err := readFull(x.f.r, buf[at:at+d.n*cs], d.lcn*cs); err != nil {
			return nil, err
		}
		at += d.n * cs
	}
	if holes == 0 {
		return out, nil
	}
	if err := lznt1Decode(out, buf); err != nil {
		return nil, x.f.corrupt(x.what, "compression unit %d: %v", k, err)
	}
	return out, nil
}

// lznt1Decode decompresses one NTFS compression unit from in into out,
// which it fills: chunks of 4 KiB each (a 2-byte header, then literal
// bytes and back-references under flag bytes), a chunk that decodes
// short is zero-filled to 4 KiB and the unit after the last chunk is
// zeros, as ntfs-3g and Windows read it. Every offset is checked: bad
// input is an error, never a panic or a write outside out.
func lznt1Decode(out, in []byte) error {
	const sb = 4096
	le := binary.LittleEndian
	o, i := 0, 0
	for o < len(out) && i+2 <= len(in) {
		h := le.Uint16(in[i:])
		if h == 0 {
			break
		}
		n := int(h&0x0FFF) + 1
		if i+2+n > len(in) {
			return fmt.Errorf("chunk of %d bytes at %d runs past the %d compressed bytes", n, i, len(in))
		}
		c := in[i+2 : i+2+n]
		i += 2 + n
		end := min(o+sb, len(out))
		if h&0x8000 == 0 { // stored
			o += copy(out[o:end], c)
		} else {
			start := o
			for j := 0; j < len(c); {
				tag := c[j]
				j++
				for bit := 0; bit < 8 && j < len(c); bit++ {
					if tag&1 == 0 {
						if o >= end {
							return fmt.Errorf("chunk decodes past %d bytes", sb)
						}
						out[o] = c[j]
						o++
						j++
					} else {
						if j+2 > len(c) {
							return errors.New("truncated back-reference")
						}
						tok := int(le.Uint16(c[j:]))
						j += 2
						done := o - start
						lg := 0
						for p := done - 1; p >= 0x10; p >>= 1 {
							lg++
						}
						back := tok>>(12-lg) + 1
						length := tok&(0xFFF>>lg) + 3
						if back > done {
							return fmt.Errorf("back-reference %d bytes behind %d decoded", back, done)
						}
						if o+length > end {
							return fmt.Errorf("back-reference decodes past %d bytes", sb)
						}
						for m := 0; m < length; m++ {
							out[o] = out[o-back]
							o++
						}
					}
					tag >>= 1
				}
			}
		}
		clear(out[o:end])
		o = end
	}
	clear(out[o:])
	return nil
}
