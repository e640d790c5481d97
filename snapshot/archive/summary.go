package archive

import (
	"time"

	"github.com/imagobackup/imago/snapshot"
)

// summary returns the counters of a finished run.
func (a *archiver) summary(start, end time.Time) snapshot.Summary {
	s := &a.stats
	u := func(v int64) uint64 { return uint64(max(v, 0)) }
	return snapshot.Summary{
		FilesNew:            u(s.filesNew.Load()),
		FilesChanged:        u(s.filesChanged.Load()),
		FilesUnchanged:      u(s.filesUnchanged.Load()),
		DirsNew:             u(s.dirsNew.Load()),
		DirsChanged:         u(s.dirsChanged.Load()),
		DirsUnchanged:       u(s.dirsUnchanged.Load()),
		FilesUnreadable:     u(s.filesUnreadable.Load()),
		TotalFilesProcessed: u(s.files.Load()),
		TotalBytesProcessed: u(s.bytes.Load()),
		BytesRead:           u(s.bytesRead.Load()),
		BytesSkippedHoles:   u(s.bytesHoles.Load()),
		BytesReused:         u(s.bytesReused.Load()),
		DataBlobs:           u(a.count.dataBlobs.Load()),
		TreeBlobs:           u(a.count.treeBlobs.Load()),
		DataAdded:           u(a.count.bytesAdded.Load()),
		BackupStart:         start,
		BackupEnd:           end,
		DurationSeconds:     end.Sub(start).Seconds(),
	}
}
