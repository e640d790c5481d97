package diskfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// memFile is a File held in memory (inline data).
type memFile struct{ *bytes.Reader }

// blockMapper maps file blocks to disk blocks.
type blockMapper interface {
	// lookup returns the disk block of file block lb and how many blocks
	// from there are contiguous on disk (at least 1), or hole=true and how
	// many blocks read as zeros.
	lookup(lb uint64) (pb, n uint64, hole bool, err error)
}

// extFile reads a regular file through its block map.
type extFile struct {
	x    *extFS
	size int64
	m    blockMapper
}

func (f *extFile) Size() int64 { return f.size }

func (f *extFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), f.size-off)]
	bs := uint64(f.x.bs)
	done := 0
	for done < len(want) {
		pos := uint64(off) + uint64(done)
		lb, within := pos/bs, pos%bs
		pb, n, hole, err := f.m.lookup(lb)
		if err != nil {
			return done, err
		}
		k := int(min(n*bs-within, uint64(len(want)-done)))
		if hole {
			clear(want[done : done+k])
		} else {
			if pb+n > f.x.blocksCount || pb+n < pb {
				return done, f.x.corrupt("block map", "file block %d at disk block %d beyond the file system's %d", lb, pb, f.x.blocksCount)
			}
			if err := readFull(f.x.r, want[done:done+k], int64(pb*bs+within)); err != nil {
				return done, err
			}
		}
		done += k
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// extent is one leaf of an extent tree.
type extent struct {
	lb, pb, n uint64
	uninit    bool
}

type extentMap struct{ ext []extent }

func (x *extFS) extentMap(in *extInode) (*extentMap, error) {
	m := &extentMap{}
	budget := extMaxExtentBlocks
	if err := x.walkExtents(in, in.block[:], -1, &budget, m); err != nil {
		return nil, err
	}
	for i := 1; i < len(m.ext); i++ {
		if m.ext[i].lb < m.ext[i-1].lb+m.ext[i-1].n {
			return nil, x.corrupt(fmt.Sprintf("inode %d", in.num), "extents overlap or are out of order at file block %d", m.ext[i].lb)
		}
	}
	return m, nil
}

func (x *extFS) walkExtents(in *extInode, b []byte, wantDepth int, budget *int, m *extentMap) error {
	le := binary.LittleEndian
	what := fmt.Sprintf("extent tree of inode %d", in.num)
	if len(b) < 12 || le.Uint16(b) != 0xF30A {
		return x.corrupt(what, "bad header magic")
	}
	entries := int(le.Uint16(b[2:]))
	depth := int(le.Uint16(b[6:]))
	if 12+12*entries > len(b) || depth > extMaxExtentDepth || wantDepth >= 0 && depth != wantDepth {
		return x.corrupt(what, "node with %d entries at depth %d", entries, depth)
	}
	for i := 0; i < entries; i++ {
		e := b[12+12*i:]
		if depth == 0 {
			n := uint64(le.Uint16(e[4:]))
			uninit := n > 32768
			if uninit {
				n -= 32768
			}
			pb := uint64(le.Uint32(e[8:])) | uint64(le.Uint16(e[6:]))<<32
			m.ext = append(m.ext, extent{lb: uint64(le.Uint32(e)), pb: pb, n: n, uninit: uninit})
			continue
		}
		if *budget--; *budget < 0 {
			return x.corrupt(what, "more than %d tree blocks", extMaxExtentBlocks)
		}
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if child >= x.blocksCount {
			return x.corrupt(what, "child block %d beyond the file system", child)
		}
		cb := make([]byte, x.bs)
		if err := readFull(x.r, cb, int64(child)*x.bs); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := x.walkExtents(in, cb, depth-1, budget, m); err != nil {
			return err
		}
	}
	return nil
}

func (m *extentMap) lookup(lb uint64) (uint64, uint64, bool, error) {
	// The last extent starting at or before lb.
	lo, hi := 0, len(m.ext)
	for lo < hi {
		mid := (lo + hi) / 2
		if m.ext[mid].lb <= lb {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if i := lo - 1; i >= 0 && lb < m.ext[i].lb+m.ext[i].n {
		e := m.ext[i]
		return e.pb + (lb - e.lb), e.n - (lb - e.lb), e.uninit, nil
	}
	if lo < len(m.ext) {
		return 0, m.ext[lo].lb - lb, true, nil
	}
	return 0, 1 << 32, true, nil
}

// indirectMap maps the blocks of an ext2/ext3 file: 12 direct pointers,
// then single, double and triple indirect blocks.
type indirectMap struct {
	x  *extFS
	in *extInode

	mu sync.Mutex // guards the one-block cache below
	// cached is the last pointer block read (sequential reads hit it).
	cachedAt uint64
	cached   []byte
}

func (m *indirectMap) pointerBlock(pb uint64) ([]byte, error) {
	m.mu.Lock()
	if m.cached != nil && m.cachedAt == pb {
		b := m.cached
		m.mu.Unlock()
		return b, nil
	}
	m.mu.Unlock()
	if pb >= m.x.blocksCount {
		return nil, m.x.corrupt(fmt.Sprintf("inode %d", m.in.num), "indirect block %d beyond the file system", pb)
	}
	b := make([]byte, m.x.bs)
	if err := readFull(m.x.r, b, int64(pb)*m.x.bs); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.cached, m.cachedAt = b, pb
	m.mu.Unlock()
	return b, nil
}

func (m *indirectMap) lookup(lb uint64) (uint64, uint64, bool, error) {
	le := binary.LittleEndian
	ppb := uint64(m.x.bs / 4)
	// run counts contiguous pointers in ptrs from index i.
	run := func(ptrs []byte, i uint64) (uint64, uint64, bool, error) {
		pb := uint64(le.Uint32(ptrs[4*i:]))
		n := uint64(1)
		for j := i + 1; j < uint64(len(ptrs)/4); j++ {
			q := uint64(le.Uint32(ptrs[4*j:]))
			if pb == 0 && q != 0 || pb != 0 && q != pb+n {
				break
			}
			n++
		}
		return pb, n, pb == 0, nil
	}
	if lb < 12 {
		return run(m.in.block[:48], lb)
	}
	lb -= 12
	span := uint64(1)
	for level := 1; level <= 3; level++ {
		span *= ppb
		if lb >= span {
			lb -= span
			continue
		}
		top := uint64(le.Uint32(m.in.block[4*(11+level):]))
		if top == 0 {
			return 0, span - lb, true, nil
		}
		ptrs, err := m.pointerBlock(top)
		if err != nil {
			return 0, 0, false, err
		}
		for sub := span / ppb; sub > 1; sub /= ppb {
			idx := lb / sub
			next := uint64(le.Uint32(ptrs[4*idx:]))
			if next == 0 {
				return 0, sub - lb%sub, true, nil
			}
			lb %= sub
			if ptrs, err = m.pointerBlock(next); err != nil {
				return 0, 0, false, err
			}
		}
		return run(ptrs, lb)
	}
	return 0, 0, false, m.x.corrupt(fmt.Sprintf("inode %d", m.in.num), "file block beyond triple indirect")
}
