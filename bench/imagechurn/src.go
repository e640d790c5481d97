package main

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/zeebo/blake3"
)

// fixedTime is the mtime of every directory and generated file in the
// source tree, so that the same files give the same image.
var fixedTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// The image layout outside the copied system files.
const (
	dbPath   = "/var/lib/appdb/app.db"
	logDir   = "/var/log/app"
	mediaDir = "/home/user/media"
)

// maxSourceFile skips huge files: a few of them would dominate the churn.
const maxSourceFile = 16 << 20

// file is a regular file in the image (Path is absolute inside the image).
type file struct {
	Path string `json:"p"`
	Size int64  `json:"s"`
}

// state is what churn needs to remember between nights.
type state struct {
	Seed     uint64   `json:"seed"`
	Files    []file   `json:"files"`     // files in the image, except the database
	Pool     []file   `json:"pool"`      // real files on this machine not yet in the image (Path is the host path = image path)
	PoolNext int      `json:"pool_next"` // next pool file to install
	Dirs     []string `json:"dirs"`      // directories in the image (never removed)
	DBPages  int      `json:"db_pages"`
	LSN      uint64   `json:"lsn"`
}

func loadState(dir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var s state
	return &s, json.Unmarshal(b, &s)
}

func (s *state) save(dir string) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "state.json"))
}

// runSrc selects about -bytes of real files under the roots (a seeded
// random sample, so every directory is represented), copies them into -out
// at their own paths, adds the database file, and records the unselected
// files as the pool new files are taken from at night.
func runSrc(args []string) error {
	fl := flag.NewFlagSet("src", flag.ExitOnError)
	out := fl.String("out", "", "directory to fill (mkfs.ext4 -d)")
	stateDir := fl.String("state", "", "state directory")
	bytesFlag := fl.String("bytes", "450MiB", "bytes of real files to copy")
	dbFlag := fl.String("db", "64MiB", "size of the database file")
	seed := fl.Uint64("seed", 1, "selection and content seed")
	fl.Parse(args)
	if *out == "" || *stateDir == "" || fl.NArg() == 0 {
		return errors.New("need -out, -state and at least one ROOT")
	}
	want, err := parseSize(*bytesFlag)
	if err != nil {
		return err
	}
	dbBytes, err := parseSize(*dbFlag)
	if err != nil {
		return err
	}

	type cand struct {
		file
		key uint64
	}
	var all []cand
	for _, root := range fl.Args() {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable: skip
			}
			if !usableName(p) {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil || fi.Size() > maxSourceFile {
				return nil
			}
			h := blake3.Sum256(fmt.Appendf(nil, "%d\x00%s", *seed, p))
			all = append(all, cand{file{p, fi.Size()}, binary.LittleEndian.Uint64(h[:])})
			return nil
		})
		if err != nil {
			return err
		}
	}
	slices.SortFunc(all, func(a, b cand) int { return cmp.Or(cmp.Compare(a.key, b.key), strings.Compare(a.Path, b.Path)) })
	// A root listed twice, or nested roots, would list a file twice.
	all = slices.CompactFunc(all, func(a, b cand) bool { return a.Path == b.Path })

	st := &state{Seed: *seed}
	var total int64
	for _, c := range all {
		if total < want {
			if err := copyFile(c.Path, filepath.Join(*out, c.Path)); err != nil {
				continue // vanished or unreadable: leave it out
			}
			st.Files = append(st.Files, c.file)
			total += c.Size
		} else {
			st.Pool = append(st.Pool, c.file)
		}
	}
	slices.SortFunc(st.Files, func(a, b file) int { return strings.Compare(a.Path, b.Path) })
	for _, d := range []string{logDir, mediaDir, path.Dir(dbPath)} {
		st.Dirs = append(st.Dirs, d)
	}
	for _, f := range st.Files {
		st.Dirs = append(st.Dirs, path.Dir(f.Path))
	}
	slices.Sort(st.Dirs)
	st.Dirs = slices.Compact(st.Dirs)

	// The database: pages of rows, rewritten in place at night.
	st.DBPages = int(dbBytes / blockSize)
	r := rand.New(rand.NewPCG(*seed, 0xdb))
	if err := os.MkdirAll(filepath.Join(*out, path.Dir(dbPath)), 0o755); err != nil {
		return err
	}
	db, err := os.Create(filepath.Join(*out, dbPath))
	if err != nil {
		return err
	}
	page := make([]byte, blockSize)
	for i := 0; i < st.DBPages; i++ {
		st.LSN++
		dbPage(r, page, uint32(i), st.LSN)
		if _, err := db.Write(page); err != nil {
			db.Close()
			return err
		}
	}
	if err := db.Close(); err != nil {
		return err
	}
	for _, d := range []string{logDir, mediaDir} {
		if err := os.MkdirAll(filepath.Join(*out, d), 0o755); err != nil {
			return err
		}
	}
	// Fixed times on everything generated, so the image is reproducible.
	err = filepath.WalkDir(*out, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || p == filepath.Join(*out, dbPath) {
			return os.Chtimes(p, fixedTime, fixedTime)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*stateDir, 0o755); err != nil {
		return err
	}
	fmt.Printf("selected %d files, %d MiB; pool %d files; database %d MiB\n",
		len(st.Files), total>>20, len(st.Pool), dbBytes>>20)
	return st.save(*stateDir)
}

// usableName rejects paths debugfs's command parser would split or
// misread (blanks, quotes, backslashes, control characters).
func usableName(p string) bool {
	for _, c := range p {
		if c <= ' ' || c == '"' || c == '\'' || c == '\\' || c == 0x7f {
			return false
		}
	}
	return true
}

// copyFile copies src to dst (creating parents) with src's mode bits and
// modification time.
func copyFile(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}
