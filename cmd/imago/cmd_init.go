package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo"
)

func newInitCommand(g *globalOptions) *cobra.Command {
	var compression string
	var packSizeMiB int
	var imageChunker, imageChunkAvg string
	var copyChunker bool
	var from fromRepoOptions
	var owner ownerFlags
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new repository",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			loc, err := g.location()
			if err != nil {
				return err
			}
			level, err := pack.ParseCompressionLevel(compression)
			if err != nil {
				return err
			}
			if packSizeMiB < 1 || packSizeMiB > 128 {
				return fmt.Errorf("--pack-size must be between 1 and 128 MiB")
			}
			ic, err := imageChunkerSizes(imageChunker, imageChunkAvg)
			if err != nil {
				return err
			}
			var pol uint64
			if copyChunker {
				if cmd.Flags().Changed("image-chunker") || cmd.Flags().Changed("image-chunk-avg") {
					return errors.New("--copy-chunker-params takes the image chunker from the source: drop --image-chunker and --image-chunk-avg")
				}
				src, err := from.open(ctx, g, true)
				if err != nil {
					return err
				}
				sc := src.Config()
				src.Close()
				pol, ic = uint64(sc.Polynomial), &sc.ImageChunker
			} else if cmd.Flags().Changed("from-repo") {
				return errors.New("--from-repo is used with --copy-chunker-params only")
			}
			pw, err := g.readNewPassword()
			if err != nil {
				return err
			}
			be, err := openBackend(loc, true)
			if err != nil {
				return fmt.Errorf("create repository %s: %w", loc, err)
			}
			defer be.Close()
			host, username := keyOwner(owner)
			r, err := repo.Init(ctx, be, pw, repo.InitOptions{
				KDF: kdfParams(), Compression: level, PackSize: packSizeMiB << 20,
				Host: host, Username: username, ImageChunker: ic, Polynomial: pol,
			})
			if errors.Is(err, repo.ErrAlreadyInitialized) {
				return fmt.Errorf("repository %s already exists", loc)
			}
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]string{"message_type": "initialized", "id": r.Config().ID, "repository": loc})
			}
			g.printf("created imago repository %s at %s\n", shortID(r.Config().ID), loc)
			g.printf("Keep the password safe: without it the data cannot be read.\n")
			return nil
		},
	}
	cmd.Flags().StringVar(&compression, "compression", "default", "compression `level`: off, fastest, default, better")
	cmd.Flags().IntVar(&packSizeMiB, "pack-size", 16, "target pack size in `MiB`")
	cmd.Flags().StringVar(&imageChunker, "image-chunker", "fixed", "how disk images are cut: fixed or cdc (content-defined)")
	cmd.Flags().StringVar(&imageChunkAvg, "image-chunk-avg", "8KiB", "(average) image chunk `size`, a power of two: smaller stores less per night but makes more blobs to index")
	cmd.Flags().BoolVar(&copyChunker, "copy-chunker-params", false, "cut data like the --from-repo repository, so that snapshots copied from it deduplicate")
	from.addFlags(cmd.Flags())
	owner.addFlags(cmd)
	return cmd
}

// imageChunkerSizes turns the init flags into image chunker sizes, or nil
// for the built-in default. For cdc with average A: minimum A/2, 2^bits =
// A/2 (the chunker's expected chunk is minimum + 2^bits = A), maximum 4A.
// fixed cuts every A bytes (minimum = maximum = A).
func imageChunkerSizes(kind, avg string) (*repo.ChunkerSizes, error) {
	a, err := parseSize(avg)
	if err != nil {
		return nil, fmt.Errorf("--image-chunk-avg: %w", err)
	}
	if kind == "fixed" && uint(a) == repo.ImageChunker.Min && repo.ImageChunker.Min == repo.ImageChunker.Max {
		return nil, nil // the built-in default
	}
	if a < 4<<10 || a > 2<<20 || a&(a-1) != 0 {
		return nil, fmt.Errorf("--image-chunk-avg must be a power of two between 4KiB and 2MiB")
	}
	bits := 0
	for int64(1)<<bits < a {
		bits++
	}
	seg := int64(repo.DefaultImageSegment)
	switch kind {
	case "cdc":
		return &repo.ChunkerSizes{Min: uint(a / 2), Max: uint(4 * a), AverageBits: bits - 1, Segment: seg}, nil
	case "fixed":
		return &repo.ChunkerSizes{Min: uint(a), Max: uint(a), AverageBits: bits, Segment: seg}, nil
	}
	return nil, fmt.Errorf("--image-chunker must be cdc or fixed, not %q", kind)
}

// parseSize parses a byte count with an optional K/M/G/T suffix (powers of
// 1024; "KiB", "K", "k" all work).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		low := strings.ToLower(t)
		for _, suf := range []string{u.suffix + "ib", u.suffix + "b", u.suffix} {
			if strings.HasSuffix(low, suf) {
				t, mult = t[:len(t)-len(suf)], u.m
				break
			}
		}
		if mult != 1 {
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}

// readNewPassword reads a new password; on a terminal it asks twice.
func (g *globalOptions) readNewPassword() (string, error) {
	if _, ok := os.LookupEnv("IMAGO_PASSWORD"); ok || g.passwordFile != "" || g.passwordCommand != "" {
		pw, err := g.readPassword("")
		if err == nil && pw == "" {
			err = errors.New("an empty password is not allowed")
		}
		return pw, err
	}
	pw, err := promptPassword("enter password for new repository: ")
	if err != nil {
		return "", err
	}
	again, err := promptPassword("enter password again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("passwords do not match")
	}
	if pw == "" {
		return "", errors.New("an empty password is not allowed")
	}
	return pw, nil
}
