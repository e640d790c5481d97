package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/imagobackup/imago/blockdev"
	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot"
)

// isBlockDevice reports whether path names a block device (backed up as an
// image without --image).
func isBlockDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// imageSourcePath is the path recorded in an image snapshot: the absolute
// source path, or the --stdin-name for stdin.
func imageSourcePath(o *backupOptions, args []string) (string, error) {
	if o.stdin {
		if o.stdinName == "" {
			return "", fmt.Errorf("--stdin needs --stdin-name NAME")
		}
		if strings.Contains(o.stdinName, "/") {
			return "", fmt.Errorf("--stdin-name must be a plain name, not a path")
		}
		return o.stdinName, nil
	}
	if len(args) != 1 {
		return "", fmt.Errorf("an image backup takes exactly one source (device or image file)")
	}
	return filepath.Abs(args[0])
}

func runImageBackup(ctx context.Context, g *globalOptions, o *backupOptions, args []string) error {
	start := time.Now()
	snapTime, err := o.snapshotTime(start)
	if err != nil {
		return err
	}
	path, err := imageSourcePath(o, args)
	if err != nil {
		return err
	}
	var src *blockdev.Source
	var st syscall.Stat_t
	haveStat := false
	if o.stdin {
		src = blockdev.OpenReader(g.stdin, path)
	} else {
		src, err = blockdev.Open(path)
		if err != nil {
			return fmt.Errorf("image source: %w", err)
		}
		haveStat = syscall.Stat(path, &st) == nil
	}
	defer src.Close()
	host := o.hostname()

	r, release, err := g.openForBackup(ctx)
	if err != nil {
		return err
	}
	defer release()

	parent, parentNode, err := findImageParent(ctx, r, o, host, path)
	if err != nil {
		return err
	}
	cfg := r.Config()
	prog := &blockdev.Progress{}
	opts := blockdev.BackupOptions{
		Params:      cfg.ImageParams(),
		SegmentSize: cfg.ImageChunker.Segment,
		Progress:    prog,
		Force:       o.force,
	}
	var parentID *snapshot.ID
	if parent != nil {
		id, err := snapshot.ParseID(parent.ID)
		if err != nil {
			return err
		}
		parentID = &id
		opts.Parent = &parentNode.Content
		opts.ParentLoader = r
		g.verbosef(1, "using parent snapshot %s\n", shortID(parent.ID))
	}
	size := src.Size()
	pr := g.startProgress(func() progressState {
		return progressState{
			BytesDone: int64(prog.BytesDone.Load()), BytesTotal: max(size, 0),
			Extra: fmt.Sprintf("(%s reused, %s new)", formatBytes(int64(prog.BytesReused.Load())), formatBytes(int64(prog.BytesNew.Load()))),
		}
	})
	before := r.Stats()
	res, err := blockdev.Backup(ctx, src, r, r, opts)
	pr.Stop()
	if err != nil {
		return err
	}

	node := snapshot.Node{
		Name:    imageNodeName(path),
		Type:    snapshot.TypeImage,
		Mode:    0o600,
		Size:    res.Size,
		Content: res.Content,
	}
	if haveStat {
		node.Mode = st.Mode & 0o7777
		node.UID, node.GID = st.Uid, st.Gid
		node.MTime, node.ATime, node.CTime = st.Mtim.Nano(), st.Atim.Nano(), st.Ctim.Nano()
		node.Inode, node.Dev, node.Rdev = st.Ino, st.Dev, st.Rdev
	}
	ids, treeAdded, err := snapshot.SaveTree(ctx, r, &snapshot.Tree{Nodes: []snapshot.Node{node}})
	if err != nil {
		return err
	}
	if len(ids) != 1 {
		return fmt.Errorf("image root tree needs %d blobs, want 1", len(ids))
	}
	if err := r.Flush(ctx); err != nil {
		return err
	}
	after := r.Stats()
	end := time.Now()
	sum := snapshot.Summary{
		FilesNew:            1,
		TotalFilesProcessed: 1,
		TotalBytesProcessed: res.Size,
		BytesRead:           res.BytesRead,
		BytesSkippedHoles:   res.BytesHoles + res.BytesZero,
		BytesReused:         res.BytesReused,
		DataBlobs:           res.DataBlobsNew,
		DataAdded:           uint64(after.BytesNew - before.BytesNew),
		MetadataAdded:       res.TreeAdded + uint64(treeAdded),
		BackupStart:         start,
		BackupEnd:           end,
		DurationSeconds:     end.Sub(start).Seconds(),
	}
	if parent != nil {
		sum.FilesNew, sum.FilesChanged = 0, 1
		if res.BytesNew == 0 {
			sum.FilesChanged, sum.FilesUnchanged = 0, 1
		}
	}
	sn := newSnapshotRecord(host, snapTime, []string{path}, o.tags, snapshot.KindImage, parentID, ids[0], &sum)
	sn.Image = &snapshot.ImageInfo{Size: res.Size, TreeDigest: res.Digest, Name: node.Name}
	id, err := saveSnapshot(ctx, r, sn)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(struct {
			MessageType string `json:"message_type"`
			*snapshot.Summary
			SnapshotID string `json:"snapshot_id"`
			Digest     string `json:"image_digest"`
		}{"summary", &sum, id, res.Digest})
	}
	g.printf("Image:       %s, %s\n", path, formatBytes(int64(res.Size)))
	g.printf("Read:        %s (holes skipped: %s, reused from parent: %s)\n", formatBytes(int64(res.BytesRead)),
		formatBytes(int64(sum.BytesSkippedHoles)), formatBytes(int64(res.BytesReused)))
	g.printf("Added:       %s to the repository (%s metadata)\n", formatBytes(int64(sum.DataAdded)), formatBytes(int64(sum.MetadataAdded)))
	g.printf("Duration:    %s (%s/s)\n", formatDuration(sum.DurationSeconds), formatBytes(int64(float64(res.Size)/max(sum.DurationSeconds, 1e-3))))
	g.printf("snapshot %s saved\n", shortID(id))
	return nil
}

// imageNodeName is the name of the image node: the source's base name.
func imageNodeName(path string) string {
	n := filepath.Base(path)
	if n == "/" || n == "." || n == "" {
		return "image"
	}
	return n
}

// findImageParent picks the parent of an image backup: --parent, or the
// latest image snapshot of the same host and source path.
func findImageParent(ctx context.Context, r *repo.Repository, o *backupOptions, host, path string) (*storedSnapshot, *snapshot.Node, error) {
	if o.force {
		return nil, nil, nil
	}
	var parent *storedSnapshot
	if o.parent != "" {
		s, err := findSnapshot(ctx, r, nil, o.parent)
		if err != nil {
			return nil, nil, fmt.Errorf("parent: %w", err)
		}
		if s.Kind != snapshot.KindImage {
			return nil, nil, fmt.Errorf("parent %s is not an image snapshot", shortID(s.ID))
		}
		parent = &s
	} else {
		snaps, err := loadSnapshots(ctx, r, &snapshotFilter{hosts: []string{host}})
		if err != nil {
			return nil, nil, err
		}
		for i := len(snaps) - 1; i >= 0; i-- {
			if snaps[i].Kind == snapshot.KindImage && equalStrings(snaps[i].Paths, []string{path}) {
				parent = &snaps[i]
				break
			}
		}
	}
	if parent == nil {
		return nil, nil, nil
	}
	n, err := imageNode(ctx, r, *parent)
	if err != nil {
		return nil, nil, err
	}
	return parent, n, nil
}

// imageNode loads the image node of an image snapshot.
func imageNode(ctx context.Context, r *repo.Repository, s storedSnapshot) (*snapshot.Node, error) {
	if s.Kind != snapshot.KindImage {
		return nil, fmt.Errorf("snapshot %s is not an image snapshot", shortID(s.ID))
	}
	t, err := snapshot.LoadTree(ctx, r, []chunk.ID{s.Tree})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", shortID(s.ID), err)
	}
	if len(t.Nodes) != 1 || t.Nodes[0].Type != snapshot.TypeImage {
		return nil, fmt.Errorf("snapshot %s: root tree holds no single image node", shortID(s.ID))
	}
	return &t.Nodes[0], nil
}

// restoreImage writes an image snapshot to a file or block device.
func restoreImage(ctx context.Context, g *globalOptions, r *repo.Repository, s storedSnapshot, target string, sparse bool) error {
	n, err := imageNode(ctx, r, s)
	if err != nil {
		return err
	}
	path := blockdev.TargetPath(target, n.Name)
	t, err := blockdev.OpenTarget(path, int64(n.Size), blockdev.TargetOptions{Sparse: sparse})
	if err != nil {
		return err
	}
	prog := &blockdev.RestoreProgress{}
	pr := g.startProgress(func() progressState {
		return progressState{BytesDone: int64(prog.BytesDone.Load()), BytesTotal: int64(n.Size)}
	})
	start := time.Now()
	opts := blockdev.RestoreOptions{Progress: prog}
	if s.Image != nil {
		opts.Digest, opts.PlainDigest = s.Image.TreeDigest, s.Image.Digest
	}
	err = blockdev.Restore(ctx, r, n.Content, int64(n.Size), t, opts)
	pr.Stop()
	if cerr := t.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", path, cerr)
	}
	if err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	if g.json {
		return g.printJSON(map[string]any{
			"message_type": "summary", "snapshot_id": s.ID, "target": path, "bytes_restored": n.Size,
			"bytes_written": prog.BytesWritten.Load(), "bytes_holes": prog.BytesSkipped.Load(),
			"digest_verified": opts.Digest != "" || opts.PlainDigest != "", "duration_seconds": el,
		})
	}
	g.printf("restored image %s (%s) to %s in %s", n.Name, formatBytes(int64(n.Size)), path, formatDuration(el))
	if opts.Digest != "" || opts.PlainDigest != "" {
		g.printf(", digest verified")
	}
	g.printf("\n")
	return nil
}

// dumpImage streams an image snapshot to w.
func dumpImage(ctx context.Context, r *repo.Repository, s storedSnapshot, w io.Writer) error {
	n, err := imageNode(ctx, r, s)
	if err != nil {
		return err
	}
	return snapshot.Dump(ctx, r, n.Content, w, 8)
}

// newSnapshotRecord fills the fields every snapshot record has.
func newSnapshotRecord(host string, t time.Time, paths, tagArgs []string, kind snapshot.Kind, parent *snapshot.ID, tree chunk.ID, sum *snapshot.Summary) *snapshot.Snapshot {
	var tags []string
	for _, a := range tagArgs {
		tags = append(tags, splitList(a)...)
	}
	username, uid, gid := currentUser()
	return &snapshot.Snapshot{
		Version: 1, Time: t, Host: host, Username: username, UID: uid, GID: gid,
		Tags: tags, Paths: paths, Kind: kind, Parent: parent, Tree: tree, Summary: sum,
		ProgramVersion: "imago " + version,
	}
}

// saveSnapshot stores a snapshot record, the last write of a backup.
func saveSnapshot(ctx context.Context, r *repo.Repository, sn *snapshot.Snapshot) (string, error) {
	b, err := snapshot.Encode(sn)
	if err != nil {
		return "", err
	}
	id, err := r.SaveFile(ctx, backend.Snapshot, b)
	if err != nil {
		return "", fmt.Errorf("save snapshot: %w", err)
	}
	return id, nil
}
