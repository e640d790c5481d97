package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagobackup/imago/snapshot/nbd"
)

// requireTools fails the test when a tool it drives is missing.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/install-test-deps.sh", tool)
		}
	}
}

// background is an imago process running until the test stops it.
type background struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     bytes.Buffer // stdout and stderr so far
	done    chan struct{}
	code    int
	lines   chan string
	stopped bool
}

// start runs imago in the background and waits until a line of its output
// matches ready, which it returns.
func (e *env) start(ready *regexp.Regexp, args ...string) (*background, string) {
	e.t.Helper()
	cmd := exec.Command(binary, append([]string{"-r", e.repo}, args...)...)
	cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	b := &background{cmd: cmd, done: make(chan struct{}), lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			b.mu.Lock()
			b.out.WriteString(sc.Text() + "\n")
			b.mu.Unlock()
			select {
			case b.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		if ee, ok := err.(*exec.ExitError); ok {
			b.code = ee.ExitCode()
		} else if err != nil {
			b.code = -1
		}
		close(b.done)
	}()
	e.t.Cleanup(func() { b.stop(e.t) })
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line := <-b.lines:
			if ready.MatchString(line) {
				return b, line
			}
		case <-b.done:
			e.t.Fatalf("imago %v exited with %d before it was ready:\n%s", args, b.code, b.output())
		case <-timeout:
			e.t.Fatalf("imago %v not ready after 30 s:\n%s", args, b.output())
		}
	}
}

func (b *background) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// stop sends SIGTERM and returns the exit code; it fails the test if the
// process does not exit within 20 s.
func (b *background) stop(t testing.TB) int {
	t.Helper()
	if b.stopped {
		return b.code
	}
	b.stopped = true
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		b.cmd.Process.Kill()
		<-b.done
		t.Errorf("imago did not exit 20 s after SIGTERM:\n%s", b.output())
	}
	return b.code
}

// fileDigest returns the hex SHA-256 of a file's content.
func fileDigest(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// writeImage writes a disk-like image of n bytes: random data, an all-zero
// range and a sparse hole at the end.
func writeImage(t testing.TB, path string, n int, seed uint64) {
	t.Helper()
	b := make([]byte, n-(1<<20))
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	clear(b[2<<20 : 3<<20])
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(n)); err != nil {
		t.Fatal(err)
	}
}

var listeningRE = regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)

func TestServeNBDWithRealClients(t *testing.T) {
	requireTools(t, "nbdinfo", "nbdcopy")
	e := newEnv(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	const size = 24 << 20
	writeImage(t, img, size, 1)
	want := fileDigest(t, img)
	e.mustRun("backup", "--image", img)

	srv, line := e.start(listeningRE, "serve", "nbd", "latest", "--listen", "127.0.0.1:0")
	addr := listeningRE.FindStringSubmatch(line)[1]
	uri := "nbd://" + addr + "/"

	out, err := exec.Command("nbdinfo", "--json", uri).Output()
	if err != nil {
		t.Fatalf("nbdinfo: %v", err)
	}
	var info struct {
		Exports []struct {
			Name     string `json:"export-name"`
			Size     int64  `json:"export-size"`
			ReadOnly bool   `json:"is_read_only"`
			CanTrim  bool   `json:"can_trim"`
			MinBlock int64  `json:"block_size_minimum"`
		} `json:"exports"`
	}
	if err := json.Unmarshal(out, &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if x := info.Exports[0]; x.Size != size || !x.ReadOnly || x.CanTrim || x.MinBlock != 1 {
		t.Errorf("nbdinfo: %+v; want size %d, read-only", x, size)
	}

	// Two concurrent nbdcopy clients (each with several connections).
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := filepath.Join(dir, fmt.Sprintf("copy%d.img", i))
			if out, err := exec.Command("nbdcopy", uri, dst).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("nbdcopy: %v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		if got := fileDigest(t, filepath.Join(dir, fmt.Sprintf("copy%d.img", i))); got != want {
			t.Errorf("nbdcopy client %d: sha256 %s, the image %s", i, got, want)
		}
	}

	// A client hanging up mid-read and one sending garbage do not stop
	// the server.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	go c.ReadAt(make([]byte, 16<<20), 0)
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		conn.Close()
	}
	if out, err := exec.Command("nbdcopy", uri, filepath.Join(dir, "again.img")).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy after bad clients: %v: %s", err, out)
	}
	if got := fileDigest(t, filepath.Join(dir, "again.img")); got != want {
		t.Error("copy after bad clients differs from the image")
	}
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM:\n%s", code, srv.output())
	}
}

func TestServeNBDRefusesAFileSnapshot(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustRun("backup", src)
	r := e.run("serve", "nbd", "latest", "--listen", "127.0.0.1:0")
	if r.code != 1 || !strings.Contains(r.stderr, "is not an image snapshot") {
		t.Errorf("serve nbd of a file snapshot: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestServeNBDWritableOverlay(t *testing.T) {
	requireTools(t, "nbdinfo", "nbdcopy")
	e := newEnv(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	const size = 8 << 20
	writeImage(t, img, size, 2)
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	e.mustRun("backup", "--image", img)
	overlay := filepath.Join(dir, "overlay")

	srv, line := e.start(listeningRE, "serve", "nbd", "latest", "--listen", "127.0.0.1:0", "--writable-overlay", overlay)
	addr := listeningRE.FindStringSubmatch(line)[1]
	out, err := exec.Command("nbdinfo", "--json", "nbd://"+addr+"/").Output()
	if err != nil || !bytes.Contains(out, []byte(`"is_read_only": false`)) || !bytes.Contains(out, []byte(`"can_flush": true`)) {
		t.Errorf("nbdinfo of a writable export: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	modified := bytes.Clone(orig)
	patch := bytes.Repeat([]byte("VM was here "), 1000)
	for _, off := range []int64{0, 5000, 3 << 20, size - int64(len(patch))} {
		if _, err := c.WriteAt(patch, off); err != nil {
			t.Fatal(err)
		}
		copy(modified[off:], patch)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if out, err := exec.Command("nbdcopy", "nbd://"+addr+"/", filepath.Join(dir, "copy.img")).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v: %s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "copy.img"))
	if !bytes.Equal(got, modified) {
		t.Error("the export does not show the writes")
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exited %d:\n%s", code, srv.output())
	}

	// The snapshot is untouched; a second run continues from the overlay.
	r := e.mustRun("dump", "latest")
	if r.stdout != string(orig) {
		t.Error("the snapshot changed after writes to the overlay")
	}
	srv, line = e.start(listeningRE, "serve", "nbd", "latest", "--listen", "127.0.0.1:0", "--writable-overlay", overlay)
	addr = listeningRE.FindStringSubmatch(line)[1]
	if out, err := exec.Command("nbdcopy", "nbd://"+addr+"/", filepath.Join(dir, "copy2.img")).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v: %s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "copy2.img")); !bytes.Equal(got, modified) {
		t.Error("a reused overlay lost its writes")
	}
	srv.stop(t)
}

// isMountPoint reports whether dir is a mount point.
func isMountPoint(t testing.TB, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

var mountedRE = regexp.MustCompile(`^mounted \d+ snapshots on`)

func TestMountFilesAndNightlyImages(t *testing.T) {
	requireTools(t, "fusermount3", "mkfs.ext4", "losetup")
	e := newEnv(t)
	dir := t.TempDir()

	// A file tree, and two nights of an ext4 image holding a file.
	src := filepath.Join(dir, "src")
	makeTree(t, src)
	e.mustRun("backup", "--time", "2024-06-01T01:00:00Z", src)
	fsSrc := filepath.Join(dir, "fs-src")
	if err := os.MkdirAll(fsSrc, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "disk.img")
	var sums []string
	for night := range 2 {
		writeRandom(t, filepath.Join(fsSrc, "night.bin"), 1<<20+night, uint64(night+10))
		os.Remove(img)
		if err := os.Truncate(img, 0); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		f, _ := os.Create(img)
		f.Truncate(32 << 20)
		f.Close()
		if out, err := exec.Command("mkfs.ext4", "-q", "-d", fsSrc, img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v: %s", err, out)
		}
		sums = append(sums, fileDigest(t, img))
		e.mustRun("backup", "--image", "--time", fmt.Sprintf("2024-06-0%dT02:00:00Z", night+2), img)
	}
	var snaps []struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal([]byte(e.mustRun("snapshots", "--json").stdout), &snaps); err != nil || len(snaps) != 3 {
		t.Fatalf("snapshots --json: %v (%d)", err, len(snaps))
	}

	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m, _ := e.start(mountedRE, "mount", mnt)

	// Every night's image is byte-identical to its source.
	for i, s := range snaps[1:] {
		if got := fileDigest(t, filepath.Join(mnt, "ids", s.ID[:8], "disk.img")); got != sums[i] {
			t.Errorf("night %d: mounted image sha256 %s, source %s", i, got, sums[i])
		}
	}
	// The newest image can be loop-mounted and read.
	latest := filepath.Join(mnt, "snapshots", "latest", "disk.img")
	out, err := exec.Command("losetup", "-r", "-f", "--show", latest).Output()
	if err != nil {
		t.Fatalf("losetup -r %s: %v", latest, err)
	}
	loop := strings.TrimSpace(string(out))
	fsMnt := filepath.Join(dir, "fs-mnt")
	os.Mkdir(fsMnt, 0o755)
	if out, err := exec.Command("mount", "-o", "ro,noload", loop, fsMnt).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", loop).Run()
		t.Fatalf("mount %s: %v: %s", loop, err, out)
	}
	got, err := os.ReadFile(filepath.Join(fsMnt, "night.bin"))
	want, _ := os.ReadFile(filepath.Join(fsSrc, "night.bin"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("file in the loop-mounted image: %v, equal %v", err, bytes.Equal(got, want))
	}
	exec.Command("umount", fsMnt).Run()
	exec.Command("losetup", "-d", loop).Run()

	// The file snapshot shows the original files and their metadata.
	compareTrees(t, describe(t, src), describe(t, filepath.Join(mnt, "ids", snaps[0].ID[:8], src)))

	if code := m.stop(t); code != 0 {
		t.Errorf("mount exited %d after SIGTERM:\n%s", code, m.output())
	}
	if isMountPoint(t, mnt) {
		t.Errorf("%s is still a mount point after SIGTERM", mnt)
	}
}

// BenchmarkRandomReads4K measures random 4 KiB reads of a 256 MiB image
// through `serve nbd` (a Go client), through `mount` and from the restored
// image file on disk, and prints IOPS and latency percentiles. It is a
// report for docs/PERFORMANCE.md, not a test.
func BenchmarkRandomReads4K(b *testing.B) {
	requireTools(b, "fusermount3")
	dir := b.TempDir()
	e := &env{repo: filepath.Join(dir, "repo"), password: "bench"}
	run := func(args ...string) {
		cmd := exec.Command(binary, append([]string{"-r", e.repo}, args...)...)
		cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("imago %v: %v: %s", args, err, out)
		}
	}
	run("init")
	img := filepath.Join(dir, "disk.img")
	const size = 256 << 20
	writeImage(b, img, size, 3)
	run("backup", "--image", img)
	restored := filepath.Join(dir, "restored.img")
	run("restore", "latest", "--target", restored)

	const reads = 2000
	measure := func(name string, read func(p []byte, off int64) error) {
		rng := rand.New(rand.NewPCG(42, 42))
		buf := make([]byte, 4096)
		lat := make([]time.Duration, reads)
		start := time.Now()
		for i := range lat {
			off := rng.Int64N(size/4096) * 4096
			t0 := time.Now()
			if err := read(buf, off); err != nil {
				b.Fatalf("%s: read at %d: %v", name, off, err)
			}
			lat[i] = time.Since(t0)
		}
		total := time.Since(start)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		fmt.Printf("%-28s %7.0f IOPS  p50 %8v  p99 %8v  max %8v\n", name, float64(reads)/total.Seconds(),
			lat[reads/2].Round(time.Microsecond), lat[reads*99/100].Round(time.Microsecond), lat[reads-1].Round(time.Microsecond))
	}
	for range b.N {
		// Restored file, page cache dropped for it first.
		f, err := os.Open(restored)
		if err != nil {
			b.Fatal(err)
		}
		f.Sync()
		dropCache(f)
		measure("restored file (cold cache)", func(p []byte, off int64) error { _, err := f.ReadAt(p, off); return err })
		measure("restored file (warm)", func(p []byte, off int64) error { _, err := f.ReadAt(p, off); return err })
		f.Close()

		// NBD.
		cmd, addr := startServe(b, e, "serve", "nbd", "latest", "--listen", "127.0.0.1:0")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := nbd.Dial(ctx, addr, "")
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		measure("nbd, cold chunk cache", func(p []byte, off int64) error { _, err := c.ReadAt(p, off); return err })
		measure("nbd, warm chunk cache", func(p []byte, off int64) error { _, err := c.ReadAt(p, off); return err })
		c.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()

		// FUSE mount.
		mnt := filepath.Join(dir, "mnt")
		os.Mkdir(mnt, 0o755)
		mcmd, _ := startServe(b, e, "mount", mnt)
		mf, err := os.Open(filepath.Join(mnt, "snapshots", "latest", "disk.img"))
		if err != nil {
			b.Fatal(err)
		}
		measure("mount, cold chunk cache", func(p []byte, off int64) error { _, err := mf.ReadAt(p, off); return err })
		dropCache(mf)
		measure("mount, warm chunk cache", func(p []byte, off int64) error { _, err := mf.ReadAt(p, off); return err })
		mf.Close()
		mcmd.Process.Signal(syscall.SIGTERM)
		mcmd.Wait()
	}
}

// dropCache asks the kernel to drop f's cached pages.
func dropCache(f *os.File) {
	const fadvDontNeed = 4
	syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0)
}

// startServe starts imago (serve or mount) for the benchmark and waits for
// its ready line; it returns the process and the NBD address, if any.
func startServe(b *testing.B, e *env, args ...string) (*exec.Cmd, string) {
	cmd := exec.Command(binary, append([]string{"-r", e.repo}, args...)...)
	cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, out)
			return cmd, m[1]
		}
		if mountedRE.MatchString(sc.Text()) {
			go io.Copy(io.Discard, out)
			return cmd, ""
		}
	}
	b.Fatalf("imago %v exited before it was ready", args)
	return nil, ""
}
