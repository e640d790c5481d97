package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
	"github.com/imagobackup/imago/snapshot/filter"
)

type backupOptions struct {
	tags             []string
	host             string
	time             string
	parent           string
	force            bool
	excludes         []string
	excludeFiles     []string
	excludeIfPresent []string
	oneFileSystem    bool
	image            bool
	stdin            bool
	stdinName        string
}

func newBackupCommand(g *globalOptions) *cobra.Command {
	var o backupOptions
	cmd := &cobra.Command{
		Use:   "backup PATH... | backup --image DEVICE|FILE | backup --image --stdin --stdin-name NAME",
		Short: "Create a snapshot of files and directories, or of a whole disk",
		Long: `Back up files and directories, or a whole disk, into a new snapshot.

Files unchanged since the parent snapshot (same size, mtime, ctime and inode)
are not read again. The parent is the latest snapshot of the same host and
paths unless --parent names another.

With --image (automatic for a block device) the source is backed up as one
disk image: holes and zero ranges are stored as holes, and chunks unchanged
since the parent image are recognised by hash without re-chunking.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.stdin {
				if !o.image {
					return fmt.Errorf("--stdin needs --image")
				}
				return cobra.NoArgs(cmd, args)
			}
			return cobra.MinimumNArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.image || o.stdin || (len(args) == 1 && isBlockDevice(args[0])) {
				return runImageBackup(cmd.Context(), g, &o, args)
			}
			return runBackup(cmd.Context(), g, &o, args)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.tags, "tag", nil, "add `tags` to the snapshot (comma-separated, repeatable)")
	f.StringVar(&o.host, "host", "", "record `hostname` instead of this machine's name")
	f.StringVar(&o.time, "time", "", "snapshot `time` (RFC 3339 or \"YYYY-MM-DD HH:MM:SS\" local time) instead of now")
	f.StringVar(&o.parent, "parent", "", "use this `snapshot` as the parent for change detection")
	f.BoolVar(&o.force, "force", false, "read every file again (ignore the parent)")
	f.StringArrayVarP(&o.excludes, "exclude", "e", nil, "exclude paths matching `pattern` (repeatable)")
	f.StringArrayVar(&o.excludeFiles, "exclude-file", nil, "read exclude patterns from `file` (repeatable)")
	f.StringArrayVar(&o.excludeIfPresent, "exclude-if-present", nil, "exclude directories containing a file named `name` (repeatable)")
	f.BoolVarP(&o.oneFileSystem, "one-file-system", "x", false, "do not cross file system boundaries")
	f.BoolVar(&o.image, "image", false, "back up the source (a device or an image file) as a disk image")
	f.BoolVar(&o.stdin, "stdin", false, "with --image: read the image from standard input")
	f.StringVar(&o.stdinName, "stdin-name", "", "with --stdin: the `name` to record for the image")
	return cmd
}

// snapshotTime is --time, or now.
func (o *backupOptions) snapshotTime(now time.Time) (time.Time, error) {
	if o.time == "" {
		return now, nil
	}
	return parseTime(o.time)
}

// hostname is --host, or this machine's name.
func (o *backupOptions) hostname() string {
	if o.host != "" {
		return o.host
	}
	h, _ := os.Hostname()
	return h
}

// parseTime accepts RFC 3339 or "YYYY-MM-DD HH:MM:SS" in local time.
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02 15:04:05", s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("invalid time %q: use RFC 3339 or \"YYYY-MM-DD HH:MM:SS\"", s)
}

// absPaths cleans and absolutises the backup targets, sorted and deduplicated.
func absPaths(args []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, a := range args {
		p, err := filepath.Abs(a)
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

func runBackup(ctx context.Context, g *globalOptions, o *backupOptions, args []string) error {
	start := time.Now()
	snapTime, err := o.snapshotTime(start)
	if err != nil {
		return err
	}
	paths, err := absPaths(args)
	if err != nil {
		return err
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			return fmt.Errorf("backup source: %w", err)
		}
	}
	patterns := append([]string(nil), o.excludes...)
	for _, f := range o.excludeFiles {
		ps, err := filter.ReadPatternFile(f)
		if err != nil {
			return err
		}
		patterns = append(patterns, ps...)
	}
	var excl *filter.Matcher
	if len(patterns) > 0 {
		if excl, err = filter.Compile(patterns); err != nil {
			return err
		}
	}
	host := o.hostname()

	r, release, err := g.openForBackup(ctx)
	if err != nil {
		return err
	}
	defer release()

	parent, err := findParent(ctx, r, o, host, paths)
	if err != nil {
		return err
	}
	var parentTree chunk.ID
	var parentID *snapshot.ID
	if parent != nil {
		parentTree = parent.Tree
		id, err := snapshot.ParseID(parent.ID)
		if err != nil {
			return err
		}
		parentID = &id
		g.verbosef(1, "using parent snapshot %s\n", shortID(parent.ID))
	}

	prog := &archive.Progress{}
	opts := archive.Options{
		Exclude:          excl,
		ExcludeIfPresent: o.excludeIfPresent,
		OneFileSystem:    o.oneFileSystem,
		Parent:           parentTree,
		Params:           r.Config().FileParams(),
		Progress:         prog,
		OnError: func(path string, err error) {
			g.warnf("warning: %s: %v\n", path, err)
		},
	}

	// Count what the backup will process, for the ETA, beside the backup.
	var totalFiles, totalBytes atomic.Int64
	scanCtx, cancelScan := context.WithCancel(ctx)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		f, b, err := archive.Scan(scanCtx, paths, opts)
		if err == nil {
			totalFiles.Store(f)
			totalBytes.Store(b)
		}
	}()
	pr := g.startProgress(func() progressState {
		return progressState{FilesDone: prog.Files.Load(), FilesTotal: totalFiles.Load(),
			BytesDone: prog.Bytes.Load(), BytesTotal: totalBytes.Load(), Current: prog.Current()}
	})
	res, err := archive.Run(ctx, r, r, paths, opts)
	if err == nil {
		err = r.Flush(ctx)
	}
	cancelScan()
	<-scanDone
	pr.Stop()
	if err != nil {
		return err
	}

	sum := res.Summary
	sum.BackupStart = start
	sum.BackupEnd = time.Now()
	sum.DurationSeconds = sum.BackupEnd.Sub(start).Seconds()
	sn := newSnapshotRecord(host, snapTime, paths, o.tags, snapshot.KindFiles, parentID, res.Tree, &sum)
	id, err := saveSnapshot(ctx, r, sn)
	if err != nil {
		return err
	}
	if g.json {
		if err := g.printJSON(struct {
			MessageType string `json:"message_type"`
			*snapshot.Summary
			SnapshotID string `json:"snapshot_id"`
		}{"summary", &sum, id}); err != nil {
			return err
		}
	} else {
		printBackupSummary(g, &sum, id)
	}
	if res.Errors > 0 {
		return fmt.Errorf("snapshot %s saved, but %d source files could not be read: %w", shortID(id), res.Errors, errPartial)
	}
	return nil
}

func printBackupSummary(g *globalOptions, s *snapshot.Summary, id string) {
	g.printf("Files:       %d new, %d changed, %d unmodified\n", s.FilesNew, s.FilesChanged, s.FilesUnchanged)
	g.printf("Dirs:        %d new, %d changed, %d unmodified\n", s.DirsNew, s.DirsChanged, s.DirsUnchanged)
	g.printf("Processed:   %d files, %s; read %s\n", s.TotalFilesProcessed, formatBytes(int64(s.TotalBytesProcessed)), formatBytes(int64(s.BytesRead)))
	g.printf("Added:       %s to the repository\n", formatBytes(int64(s.DataAdded)))
	g.printf("Duration:    %s\n", formatDuration(s.DurationSeconds))
	g.printf("snapshot %s saved\n", shortID(id))
}

// findParent picks the parent snapshot: --parent, or the latest snapshot of
// the same host with the same paths and kind.
func findParent(ctx context.Context, r *repo.Repository, o *backupOptions, host string, paths []string) (*storedSnapshot, error) {
	if o.force {
		return nil, nil
	}
	if o.parent != "" {
		s, err := findSnapshot(ctx, r, nil, o.parent)
		if err != nil {
			return nil, fmt.Errorf("parent: %w", err)
		}
		return &s, nil
	}
	snaps, err := loadSnapshots(ctx, r, &snapshotFilter{hosts: []string{host}})
	if err != nil {
		return nil, err
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		s := snaps[i]
		if s.Kind == snapshot.KindFiles && equalStrings(s.Paths, paths) {
			return &s, nil
		}
	}
	return nil, nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// currentUser returns the name, uid and gid of the user running imago.
func currentUser() (string, uint32, uint32) {
	u, err := user.Current()
	if err != nil {
		return "", uint32(os.Getuid()), uint32(os.Getgid())
	}
	return u.Username, uint32(os.Getuid()), uint32(os.Getgid())
}
