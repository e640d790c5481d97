package index

import "errors"

// Spill policy.
const (
	// spillMin is the size, in records, at which the main run on the heap
	// is written to a disk run: 16 MiB of records per kind. With the mid
	// run and the recent map, the heap then holds at most about 40 MiB of
	// records per kind, and each spill writes at least 16 MiB.
	spillMin = (16 << 20) / recSize

	// spillRatio bounds the number of disk runs. A spill merges the main
	// run with the newest disk runs that are less than spillRatio times as
	// large as what it merges, so each disk run is at least spillRatio
	// times the next newer one: 128 M blobs of one kind make at most four
	// runs, which a lookup of an absent blob searches one tag page each.
	// A record is rewritten about spillRatio+2 times while 128 M blobs are
	// added one by one; a smaller ratio writes less and searches more runs.
	spillRatio = 8

	// An Index with a directory keeps less on the heap before it merges
	// and spills: a recent map of 16 Ki blobs (~1.3 MiB), a mid run of
	// 64 Ki records (2.5 MiB) and a main run of 128 Ki records (5 MiB).
	// With New's limits (64 Ki, 256 Ki and spillMin), the index was the
	// largest heap user of a first image backup of 2 GiB at 8 KiB chunks,
	// 12 of 40 MiB in use at the peak; the smaller runs cost more
	// merges and spills, each of a few MiB, which a 2-core machine does
	// in milliseconds.
	dirRecentMax = 16 << 10
	dirMidMinMax = 64 << 10
	dirSpillMin  = 128 << 10
)

// NewInDir returns an empty Index that keeps its large sorted runs in files
// under dir (which must exist) instead of the heap. The files are private:
// created in dir, unlinked once mapped, never shared. A crash can leave
// files named imago-index-*.tmp in dir, which are safe to delete when no
// Index uses dir.
//
// Should writing a file fail (a full disk), the Index keeps the records on
// the heap and tries again when they have doubled: Add has no error to
// report, and the records stay correct either way.
func NewInDir(dir string) *Index { return newIndex(dir) }

// spillLocked merges the main run of kind k, and the newest disk runs that
// are not much larger, into a new disk run.
func (x *Index) spillLocked(k int) {
	runs := x.disk[k]
	size, i := x.main[k].len(), len(runs)
	for i > 0 && runs[i-1].len() < x.spillRatio*size {
		size += runs[i-1].len()
		i--
	}
	srcs, _ := diskSources(runs[i:])
	srcs = append(srcs, source{r: &x.main[k]})
	d, err := writeRun(x.dir, srcs, nil, size)
	if err != nil {
		x.failed[k] = x.main[k].len()
		return
	}
	x.failed[k] = 0
	for _, old := range runs[i:] {
		_ = old.m.release()
	}
	x.disk[k] = append(runs[:i:i], d)
	x.main[k] = run{}
}

// rebuildDiskLocked streams the disk runs of kind k through move into one new
// disk run. Without a directory, or should writing fail, the result goes to
// the main run on the heap instead, whose positions move must already have
// rewritten.
func (x *Index) rebuildDiskLocked(k int, move func(uint64) (uint64, bool)) {
	runs := x.disk[k]
	if len(runs) == 0 {
		return
	}
	srcs, upper := diskSources(runs)
	var d *diskRun
	err := errors.New("no directory")
	if x.dir != "" {
		d, err = writeRun(x.dir, srcs, move, upper)
	}
	if err != nil {
		srcs, _ = diskSources(runs)
		w := newMemWriter(upper)
		mergeRuns(w, srcs, move)
		_ = w.finish()
		r := w.memRun()
		x.main[k] = merge(&x.main[k], &r)
	}
	x.releaseDiskLocked(k)
	if d != nil {
		x.disk[k] = []*diskRun{d}
	}
}

// releaseDiskLocked drops the disk runs of kind k.
func (x *Index) releaseDiskLocked(k int) error {
	var errs []error
	for _, d := range x.disk[k] {
		errs = append(errs, d.m.release())
	}
	x.disk[k] = nil
	return errors.Join(errs...)
}

// Close releases the Index's mappings and files. The Index must not be used
// after Close. Close of an Index from New does nothing; Close is idempotent.
func (x *Index) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var errs []error
	for k := range numKinds {
		errs = append(errs, x.releaseDiskLocked(k))
	}
	return errors.Join(errs...)
}
