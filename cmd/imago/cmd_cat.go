package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot"
)

func newCatCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cat config|snapshot|index|pack|key|tree|blob [ID]",
		Short: "Print a repository object, decrypted, for debugging",
		Long: `Print a repository object, decrypted and decoded to JSON where it has
structure. IDs may be unique prefixes; "snapshot latest" works too.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, release, err := g.openShared(ctx)
			if err != nil {
				return err
			}
			defer release()
			what, id := args[0], ""
			if len(args) == 2 {
				id = args[1]
			} else if what != "config" {
				return fmt.Errorf("cat %s needs an ID", what)
			}
			v, raw, err := catObject(ctx, r, what, id)
			if err != nil {
				return err
			}
			if raw != nil {
				_, err = g.stdout.Write(raw)
				return err
			}
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			return enc.Encode(v)
		},
	}
	return cmd
}

// catObject returns a value to print as JSON, or raw bytes to print as is.
func catObject(ctx context.Context, r *repo.Repository, what, id string) (any, []byte, error) {
	switch what {
	case "config":
		return r.Config(), nil, nil
	case "snapshot":
		s, err := findSnapshot(ctx, r, nil, id)
		if err != nil {
			return nil, nil, err
		}
		return s.Snapshot, nil, nil
	case "index":
		name, err := r.FindFile(ctx, backend.Index, id)
		if err != nil {
			return nil, nil, err
		}
		b, err := r.LoadFile(ctx, backend.Index, name)
		if err != nil {
			return nil, nil, err
		}
		f, err := index.DecodeFile(b)
		if err != nil {
			return nil, nil, fmt.Errorf("index/%s: %w", shortID(name), err)
		}
		return f, nil, nil
	case "key":
		name, err := findBackendFile(ctx, r.Backend(), backend.Key, id)
		if err != nil {
			return nil, nil, err
		}
		b, err := backend.LoadAll(ctx, r.Backend(), backend.Handle{Type: backend.Key, Name: name}, nil)
		return nil, b, err
	case "pack":
		name, err := findBackendFile(ctx, r.Backend(), backend.Pack, id)
		if err != nil {
			return nil, nil, err
		}
		pid, err := pack.ParseID(name)
		if err != nil {
			return nil, nil, err
		}
		entries, err := r.LoadPackHeader(ctx, pid)
		if err != nil {
			return nil, nil, err
		}
		return entries, nil, nil
	case "tree", "blob":
		cid, err := chunk.ParseID(id)
		if err != nil {
			return nil, nil, err
		}
		kind := chunk.KindTree
		if what == "blob" {
			kind = chunk.KindData
		}
		b, err := r.LoadChunk(ctx, chunk.Handle{ID: cid, Kind: kind}, nil)
		if err != nil {
			return nil, nil, err
		}
		if kind == chunk.KindData {
			return nil, b, nil
		}
		if snapshot.IsPage(b) {
			v, err := snapshot.DecodePageView(b)
			if err != nil {
				return nil, nil, fmt.Errorf("content-list page %s: %w", cid.Short(), err)
			}
			return v, nil, nil
		}
		t, err := snapshot.DecodeTree(b)
		if err != nil {
			return nil, nil, fmt.Errorf("tree %s: %w", cid.Short(), err)
		}
		return t, nil, nil
	}
	return nil, nil, fmt.Errorf("cat: unknown object type %q", what)
}

// findBackendFile resolves a unique prefix among the files of type t.
func findBackendFile(ctx context.Context, be backend.Backend, t backend.FileType, prefix string) (string, error) {
	var match []string
	err := be.List(ctx, t, func(fi backend.FileInfo) error {
		if len(fi.Name) >= len(prefix) && fi.Name[:len(prefix)] == prefix {
			match = append(match, fi.Name)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("%s/%s: %w", t, prefix, backend.ErrNotExist)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("%s/%s: prefix matches %d files", t, prefix, len(match))
}
