package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// The night's write budget (a fraction of the image) is split like this;
// the rest of the blocks that change are file-system metadata (inode
// tables, bitmaps, directories, extent trees) that debugfs rewrites.
const (
	shareNew     = 0.35 // new files: installed packages, logs, downloads
	shareRewrite = 0.30 // existing files rewritten: appended, edited, regenerated
	shareDB      = 0.25 // database pages updated in place
	deleteRatio  = 0.80 // bytes deleted per byte of new files
)

// maxChurnFile keeps single files from eating a whole night's budget;
// maxNewFile does the same for the real files a night installs.
const (
	maxChurnFile = 4 << 20
	maxNewFile   = 1 << 20
)

// runChurn applies night N's changes to the image: deletions, rewrites and
// new files through one `debugfs -w -f` run, then database page updates
// written straight into the file's blocks (like dd conv=notrunc).
func runChurn(args []string) error {
	fl := flag.NewFlagSet("churn", flag.ExitOnError)
	image := fl.String("image", "", "ext4 image to change")
	stateDir := fl.String("state", "", "state directory")
	night := fl.Int("night", 1, "night number (seeds the changes)")
	frac := fl.Float64("frac", 0.012, "fraction of the image's bytes to write")
	fl.Parse(args)
	if *image == "" || *stateDir == "" {
		return errors.New("need -image and -state")
	}
	st, err := loadState(*stateDir)
	if err != nil {
		return err
	}
	fi, err := os.Stat(*image)
	if err != nil {
		return err
	}
	budget := *frac * float64(fi.Size())
	r := rand.New(rand.NewPCG(st.Seed, uint64(*night)))
	tmp := filepath.Join(*stateDir, fmt.Sprintf("night-%d", *night))
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	env := append(os.Environ(), fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", fixedTime.Unix()+int64(*night)*86400))

	var cmds bytes.Buffer
	inImage := map[string]bool{}
	dirs := map[string]bool{"/": true}
	for _, f := range st.Files {
		inImage[f.Path] = true
	}
	for _, d := range st.Dirs {
		for ; !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}

	// Deletions: random files, about deleteRatio × the new bytes.
	var deleted, rewritten, added int64
	var nDel, nRew, nNew int
	for tries := 0; float64(deleted) < deleteRatio*shareNew*budget && tries < 100000 && len(st.Files) > 0; tries++ {
		i := r.IntN(len(st.Files))
		f := st.Files[i]
		if f.Size > maxChurnFile {
			continue
		}
		fmt.Fprintf(&cmds, "rm %s\n", f.Path)
		delete(inImage, f.Path)
		st.Files[i] = st.Files[len(st.Files)-1]
		st.Files = st.Files[:len(st.Files)-1]
		deleted += f.Size
		nDel++
	}

	// Rewrites: dump the current content, change it, rm + write it back.
	type rewrite struct {
		idx   int
		local string
	}
	var rws []rewrite
	var dumps bytes.Buffer
	picked := map[int]bool{}
	var planned int64
	for tries := 0; float64(planned) < shareRewrite*budget && tries < 100000; tries++ {
		i := r.IntN(len(st.Files))
		f := st.Files[i]
		if picked[i] || f.Size < 2*blockSize || f.Size > maxChurnFile {
			continue
		}
		picked[i] = true
		local := filepath.Join(tmp, fmt.Sprintf("rw-%d", len(rws)))
		fmt.Fprintf(&dumps, "dump %s %s\n", f.Path, local)
		rws = append(rws, rewrite{i, local})
		planned += f.Size
	}
	if len(rws) > 0 {
		if err := debugfs(env, *image, false, filepath.Join(tmp, "dump.cmds"), dumps.Bytes()); err != nil {
			return err
		}
	}
	for _, rw := range rws {
		old, err := os.ReadFile(rw.local)
		if err != nil {
			return err
		}
		b := modify(r, *night, old)
		if err := os.WriteFile(rw.local, b, 0o644); err != nil {
			return err
		}
		f := &st.Files[rw.idx]
		fmt.Fprintf(&cmds, "rm %s\nwrite %s %s\n", f.Path, rw.local, f.Path)
		f.Size = int64(len(b))
		rewritten += int64(len(b))
		nRew++
	}

	// New files, by bytes: half real files not yet in the image, at their
	// own paths (a package update), a quarter generated logs, a quarter
	// incompressible media (photos, archives).
	quota := [3]float64{0.5 * shareNew * budget, 0.25 * shareNew * budget, 0.25 * shareNew * budget}
	var got [3]int64
	for i := 0; ; i++ {
		k := r.IntN(3)
		if float64(got[k]) >= quota[k] {
			if float64(got[0]) >= quota[0] && float64(got[1]) >= quota[1] && float64(got[2]) >= quota[2] {
				break
			}
			continue
		}
		var dst string
		var size int64
		local := filepath.Join(tmp, fmt.Sprintf("new-%d", i))
		switch k {
		case 0:
			if st.PoolNext >= len(st.Pool) {
				got[0] = int64(quota[0]) + 1 // pool exhausted
				continue
			}
			p := st.Pool[st.PoolNext]
			st.PoolNext++
			if inImage[p.Path] || p.Size > maxNewFile {
				continue
			}
			if err := copyFile(p.Path, local); err != nil {
				continue
			}
			dst, size = p.Path, p.Size
		case 1:
			n := 16<<10 + r.IntN(512<<10)
			dst = fmt.Sprintf("%s/app-%02d-%d.log", logDir, *night, i)
			if err := os.WriteFile(local, logText(r, *night, n), 0o644); err != nil {
				return err
			}
			size = int64(n)
		case 2:
			n := min(128<<10+r.IntN(2<<20), int(quota[2]-float64(got[2]))+64<<10)
			dst = fmt.Sprintf("%s/IMG_%02d%04d.jpg", mediaDir, *night, i)
			if err := os.WriteFile(local, randomBytes(r, n), 0o644); err != nil {
				return err
			}
			size = int64(n)
		}
		got[k] += size
		var mk []string
		for d := path.Dir(dst); !dirs[d]; d = path.Dir(d) {
			mk = append(mk, d)
			dirs[d] = true
		}
		for j := len(mk) - 1; j >= 0; j-- {
			fmt.Fprintf(&cmds, "mkdir %s\n", mk[j])
			st.Dirs = append(st.Dirs, mk[j])
		}
		fmt.Fprintf(&cmds, "write %s %s\n", local, dst)
		inImage[dst] = true
		st.Files = append(st.Files, file{dst, size})
		added += size
		nNew++
	}
	if err := debugfs(env, *image, true, filepath.Join(tmp, "churn.cmds"), cmds.Bytes()); err != nil {
		return err
	}

	// Database pages, written in place: 60% to a hot tenth of the file
	// (recent rows, upper B-tree levels), the rest anywhere.
	blocks, err := fileBlocks(env, *image, dbPath)
	if err != nil {
		return err
	}
	if len(blocks) != st.DBPages {
		return fmt.Errorf("%s has %d blocks, want %d", dbPath, len(blocks), st.DBPages)
	}
	img, err := os.OpenFile(*image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer img.Close()
	page := make([]byte, blockSize)
	nPages := int(shareDB * budget / blockSize)
	hot := st.DBPages / 10
	for i := 0; i < nPages; i++ {
		p := r.IntN(st.DBPages)
		if r.IntN(10) < 6 {
			p = st.DBPages - hot + r.IntN(hot)
		}
		st.LSN++
		dbPage(r, page, uint32(p), st.LSN)
		if _, err := img.WriteAt(page, blocks[p]*blockSize); err != nil {
			return err
		}
	}
	if err := img.Close(); err != nil {
		return err
	}
	fmt.Printf("night %d: deleted %d files (%d KiB), rewrote %d (%d KiB), added %d (%d KiB), %d database page writes\n",
		*night, nDel, deleted>>10, nRew, rewritten>>10, nNew, added>>10, nPages)
	return st.save(*stateDir)
}

// modify returns a changed copy of b, the way programs change files: logs
// grow at the end, documents get small edits or insertions (which shift
// everything after them), caches are regenerated from some point on.
func modify(r *rand.Rand, night int, b []byte) []byte {
	switch k := r.IntN(20); {
	case k < 7: // append 5–50%
		n := max(blockSize, len(b)*(5+r.IntN(46))/100)
		return append(b, logText(r, night, n)...)
	case k < 13: // a few small in-place edits
		out := bytes.Clone(b)
		for e := 1 + r.IntN(8); e > 0; e-- {
			n := 1 + r.IntN(256)
			off := r.IntN(max(1, len(out)-n))
			copy(out[off:], logText(r, night, n))
		}
		return out
	case k < 17: // an insertion: the rest of the file moves
		off := r.IntN(len(b))
		ins := logText(r, night, 16+r.IntN(4096))
		return append(append(append([]byte(nil), b[:off]...), ins...), b[off:]...)
	default: // regenerated from a random point on
		off := r.IntN(len(b))
		return append(append([]byte(nil), b[:off]...), logText(r, night, len(b)-off)...)
	}
}

// debugfs runs debugfs with a command file and fails on any complaint
// (debugfs itself exits 0 after failed commands).
func debugfs(env []string, image string, write bool, cmdFile string, cmds []byte) error {
	if err := os.WriteFile(cmdFile, cmds, 0o644); err != nil {
		return err
	}
	args := []string{"-f", cmdFile, image}
	if write {
		args = append([]string{"-w"}, args...)
	}
	c := exec.Command("debugfs", args...)
	c.Env = env
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("debugfs: %v: %s", err, stderr.Bytes())
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if line != "" && !strings.HasPrefix(line, "debugfs ") {
			return fmt.Errorf("debugfs (%s): %s", cmdFile, line)
		}
	}
	return nil
}

// fileBlocks lists the physical block numbers of a file in the image.
func fileBlocks(env []string, image, p string) ([]int64, error) {
	c := exec.Command("debugfs", "-R", "blocks "+p, image)
	c.Env = env
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("debugfs blocks %s: %v", p, err)
	}
	var blocks []int64
	for _, w := range strings.Fields(string(out)) {
		n, err := strconv.ParseInt(w, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("debugfs blocks %s: %q", p, w)
		}
		blocks = append(blocks, n)
	}
	return blocks, nil
}
