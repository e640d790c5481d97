package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/repo/backend/s3/s3test"
	"github.com/imagobackup/imago/repo/backend/sftp/sftptest"
)

// failureBound is how long a command may take to report a storage it
// cannot use: the user's nightly job must not hang.
const failureBound = 30 * time.Second

// newSFTPEnv returns an env whose repository is in a folder of a real sshd
// on 127.0.0.1, reached as a user would set it up: a HOME whose
// ~/.ssh/config names the server "backupsrv" (HostName, Port, User), with
// the key in ~/.ssh/id_ed25519 and the server's key in ~/.ssh/known_hosts.
// No ssh-agent is used. It also returns the server and the folder, which
// the server serves from this machine's file system.
func newSFTPEnv(t *testing.T) (*env, *sftptest.Server, string) {
	t.Helper()
	srv := sftptest.StartServer(t)
	home := t.TempDir()
	dotSSH := filepath.Join(home, ".ssh")
	if err := os.Mkdir(dotSSH, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(srv.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf("Host backupsrv\n  HostName %s\n  Port %d\n  User %s\n", srv.Host, srv.Port, srv.User)
	for name, b := range map[string][]byte{
		"id_ed25519":  key,
		"known_hosts": []byte(srv.KnownHosts + "\n"),
		"config":      []byte(config),
	} {
		if err := os.WriteFile(filepath.Join(dotSSH, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "repo")
	e := &env{
		t: t, repo: "sftp:backupsrv:" + dir, password: "sftp password",
		extraEnv: []string{"HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, ".cache"), "SSH_AUTH_SOCK="},
	}
	return e, srv, dir
}

// newS3Env returns an env whose repository is under a prefix of a fresh
// bucket of a real S3 server on 127.0.0.1, with the credentials in the
// AWS_* variables, and the folder holding the bucket's objects.
func newS3Env(t *testing.T) (*env, *s3test.Server, string) {
	t.Helper()
	srv := s3test.StartServer(t)
	home := t.TempDir()
	e := &env{
		t: t, repo: "s3:" + srv.URL + "/" + srv.Bucket + "/nightly", password: "s3 password",
		extraEnv: []string{
			"HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
			"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
			"AWS_SESSION_TOKEN=", "AWS_PROFILE=",
		},
	}
	return e, srv, filepath.Join(srv.Dir, srv.Bucket)
}

// remoteNight is what one night's backups saved: the snapshot IDs and
// what the sources held.
type remoteNight struct {
	treeID, imageID string
	tree            map[string]entry
	imageSum        string
}

// remoteLifecycle runs the life of a repository at e.repo: init; three
// nights of a file tree and of a sparse image with churn in between (the
// second night deletes a 20 MiB file); forget --keep-last 2 --prune;
// check --read-data; restores of both kinds. stored returns the bytes the
// repository takes on the server.
func remoteLifecycle(t *testing.T, e *env, stored func() int64) {
	e.mustRun("init")
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	img := filepath.Join(t.TempDir(), "vm.raw")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 48<<20); err != nil {
		t.Fatal(err)
	}
	writeAt(t, img, 1<<20, 6<<20, 21)
	writeAt(t, img, 40<<20, 2<<20, 22)

	churn := []func(){
		func() {},
		func() {
			writeRandom(t, filepath.Join(src, "dir/sub/night-2"), 1<<20, 23)
			if err := os.Remove(filepath.Join(src, "dir/big-20M")); err != nil {
				t.Fatal(err)
			}
			writeAt(t, img, 3<<20, 64<<10, 24)
		},
		func() {
			writeRandom(t, filepath.Join(src, "dir/random-3M"), 3<<20, 25)
			writeAt(t, img, 20<<20, 1<<20, 26) // into the hole
		},
	}
	var nights []remoteNight
	for i, change := range churn {
		change()
		when := time.Date(2026, 4, 1+i, 2, 0, 0, 0, time.UTC).Format(time.RFC3339)
		tree := e.backupJSON(src, "--time", when)
		image := e.backupJSON("--image", img, "--time", when)
		if i > 0 && num(t, image, "bytes_reused") == 0 {
			t.Errorf("night %d: the image reused nothing from its parent: %v", i+1, image)
		}
		nights = append(nights, remoteNight{
			treeID: tree["snapshot_id"].(string), imageID: image["snapshot_id"].(string),
			tree: describe(t, src), imageSum: sha256File(t, img),
		})
	}

	before := stored()
	e.mustRun("forget", "--keep-last", "2", "--prune")
	after := stored()
	// The first night alone held the 20 MiB file (random data).
	if freed := before - after; freed < 15<<20 {
		t.Errorf("forget --prune freed %d bytes on the server (%d → %d), want the ~20 MiB only the first night held", freed, before, after)
	}
	t.Logf("forget --prune: %d → %d bytes on the server", before, after)
	ids := snapshotIDs(t, e)
	want := []string{nights[1].treeID, nights[1].imageID, nights[2].treeID, nights[2].imageID}
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("after forget --keep-last 2: snapshots %v, want the last two nights' %v", ids, want)
	}

	if r := e.mustRun("check", "--read-data"); !strings.Contains(r.stdout, "no errors") {
		t.Errorf("check --read-data does not report a clean repository:\n%s", r.stdout)
	}

	for _, n := range nights[1:] {
		target := t.TempDir()
		e.mustRun("restore", n.treeID, "--target", target, "--verify")
		compareTrees(t, n.tree, describe(t, filepath.Join(target, src)))

		raw := filepath.Join(t.TempDir(), "restored.raw")
		e.mustRun("restore", n.imageID, "--target", raw)
		if got := sha256File(t, raw); got != n.imageSum {
			t.Errorf("image %s restored with sha256 %s, want %s", n.imageID, got, n.imageSum)
		}
	}
}

// failure is one way a remote repository cannot be used, as a user would
// run into it.
type failure struct {
	name   string
	modify func(w *env) []string // changes w and returns extra flags
	code   int
	cause  string // what the error line must say
}

// assertFailures runs `imago backup src` for each case and checks that it
// fails within failureBound with the documented exit code and one line
// naming the cause; then that the repository e still passes check and
// holds the same snapshots.
func assertFailures(t *testing.T, e *env, src string, cases []failure) {
	t.Helper()
	snaps := snapshotIDs(t, e)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := *e
			w.t = t
			w.extraEnv = append([]string(nil), e.extraEnv...)
			flags := c.modify(&w)
			start := time.Now()
			r := w.run(append(append([]string{"backup"}, flags...), src)...)
			took := time.Since(start)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, c.code, r.stderr)
			}
			assertOneLine(t, r.stderr)
			if !strings.Contains(r.stderr, c.cause) {
				t.Errorf("error %q does not say %q", strings.TrimSpace(r.stderr), c.cause)
			}
			if took > failureBound {
				t.Errorf("took %v to fail, want < %v", took, failureBound)
			}
		})
	}
	if r := e.mustRun("check"); !strings.Contains(r.stdout, "no errors") {
		t.Errorf("check after the failures:\n%s", r.stdout)
	}
	if got := snapshotIDs(t, e); len(got) != len(snaps) {
		t.Errorf("the failed commands changed the snapshots from %v to %v", snaps, got)
	}
}

// closedPort returns a port of 127.0.0.1 on which nothing listens.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestSFTPRepositoryLifecycle(t *testing.T) {
	e, _, dir := newSFTPEnv(t)
	remoteLifecycle(t, e, func() int64 { return dirSize(t, dir) })
	if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
		t.Errorf("the repository is not in the folder the location names: %v", err)
	}
}

func TestS3RepositoryLifecycle(t *testing.T) {
	e, _, bucketDir := newS3Env(t)
	remoteLifecycle(t, e, func() int64 { return dirSize(t, bucketDir) })
}

func TestSFTPFailures(t *testing.T) {
	e, srv, dir := newSFTPEnv(t)
	e.mustRun("init")
	src := t.TempDir()
	writeRandom(t, filepath.Join(src, "f"), 1<<20, 31)
	e.mustRun("backup", src)

	home := strings.TrimPrefix(e.extraEnv[0], "HOME=")
	otherKey := filepath.Join(t.TempDir(), "id_other")
	otherPub := sftptest.WriteKey(t, otherKey)
	mismatch := filepath.Join(t.TempDir(), "known_hosts")
	line := fmt.Sprintf("[%s]:%d %s", srv.Host, srv.Port, bytes.TrimSpace(ssh.MarshalAuthorizedKey(otherPub)))
	if err := os.WriteFile(mismatch, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	assertFailures(t, e, src, []failure{
		{"closed port", func(w *env) []string {
			w.repo = fmt.Sprintf("sftp://%s@127.0.0.1:%d%s", srv.User, closedPort(t), dir)
			return nil
		}, exitUnreachable, "unreachable"},
		{"wrong key", func(w *env) []string {
			return []string{"-o", "sftp.identity=" + otherKey, "-o", "sftp.identities-only=true"}
		}, exitRefused, "permission denied"},
		{"host key mismatch", func(w *env) []string {
			return []string{"-o", "sftp.known-hosts=" + mismatch}
		}, exitRefused, "host key mismatch"},
		{"unknown host key", func(w *env) []string {
			return []string{"-o", "sftp.known-hosts=" + filepath.Join(home, "no-such-known-hosts")}
		}, exitRefused, "unknown host key"},
		{"missing folder", func(w *env) []string {
			w.repo = "sftp:backupsrv:" + dir + "-missing"
			return nil
		}, exitNoRepo, "does not exist"},
	})

	// The server starts refusing new files in the middle of a backup (a
	// quota, a changed permission): the backup stops with the refusal,
	// and what it uploaded is no damage.
	t.Run("permission denied mid-backup", func(t *testing.T) {
		w := *e
		w.t = t
		cmd := exec.Command(binary, "-r", w.repo, "backup", "--image", "--stdin", "--stdin-name", "stream.img")
		cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+w.password, "IMAGO_INSECURE_TEST_KDF=1")
		cmd.Env = append(cmd.Env, w.extraEnv...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		packsBefore := countFiles(t, filepath.Join(dir, "data"))
		buf := make([]byte, 1<<20)
		feed := func(mib int, seed uint64) {
			for i := range mib {
				fillRandom(buf, seed+uint64(i))
				if _, err := in.Write(buf); err != nil {
					return // imago has stopped reading: it failed.
				}
			}
		}
		feed(40, 1000)
		deadline := time.Now().Add(failureBound)
		for countFiles(t, filepath.Join(dir, "data")) == packsBefore {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("no pack uploaded after 40 MiB of input; stderr %q", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		allow := denyNewFiles(t, filepath.Join(dir, "data"))
		start := time.Now()
		feed(40, 2000)
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(failureBound):
			cmd.Process.Kill()
			<-done
			t.Fatalf("backup still running %v after the server began refusing; stderr %q", failureBound, stderr.String())
		}
		if code := cmd.ProcessState.ExitCode(); code != exitRefused {
			t.Fatalf("exit %d, want %d; stderr %q", code, exitRefused, stderr.String())
		}
		t.Logf("failed %v after the server began refusing: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr.String()))
		assertOneLine(t, stderr.String())
		if !strings.Contains(stderr.String(), "permission denied") {
			t.Errorf("error %q does not say \"permission denied\"", strings.TrimSpace(stderr.String()))
		}

		allow()
		if r := w.mustRun("check", "--read-data"); !strings.Contains(r.stdout, "no errors") {
			t.Errorf("check after the refused backup:\n%s", r.stdout)
		}
		if ids := snapshotIDs(t, &w); len(ids) != 1 {
			t.Errorf("the refused backup left %d snapshots, want the 1 from before", len(ids))
		}
		// The next night's backup works: no lock was left behind.
		w.mustRun("backup", src)
		w.mustRun("prune")
	})
}

// denyNewFiles makes the pack folders below data refuse new files, as a
// storage server's file system does for a full quota or a changed
// permission: immutable for root (whom modes do not stop), read-only
// modes for another user. It returns the function that undoes it, also
// run at t's cleanup.
func denyNewFiles(t *testing.T, data string) (undo func()) {
	t.Helper()
	// FS_IMMUTABLE_FL of linux/fs.h; x/sys/unix does not name it.
	const immutable = 0x10
	shards, err := filepath.Glob(filepath.Join(data, "??"))
	if err != nil || len(shards) != 256 {
		t.Fatalf("found %d pack folders (%v), want 256", len(shards), err)
	}
	var undos []func()
	undo = func() {
		for _, u := range undos {
			u()
		}
		undos = nil
	}
	t.Cleanup(undo)
	for _, d := range shards {
		if os.Geteuid() != 0 {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, 0o555); err != nil {
				t.Fatal(err)
			}
			undos = append(undos, func() { _ = os.Chmod(d, fi.Mode().Perm()) })
			continue
		}
		f, err := os.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
		if err == nil {
			err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|immutable))
		}
		f.Close()
		if err != nil {
			t.Fatalf("make %s immutable (the test needs a file system with chattr +i for root, e.g. ext4 or xfs, as TMPDIR): %v", d, err)
		}
		undos = append(undos, func() {
			if f, err := os.Open(d); err == nil {
				_ = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^immutable))
				f.Close()
			}
		})
	}
	return undo
}

// fillRandom fills b with pseudo-random bytes from seed.
func fillRandom(b []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 | 1
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
}

func TestS3Failures(t *testing.T) {
	e, srv, _ := newS3Env(t)
	e.mustRun("init")
	src := t.TempDir()
	writeRandom(t, filepath.Join(src, "f"), 1<<20, 32)
	e.mustRun("backup", src)

	setEnv := func(w *env, kv ...string) {
		w.extraEnv = append(w.extraEnv, kv...)
	}
	assertFailures(t, e, src, []failure{
		{"wrong secret", func(w *env) []string {
			setEnv(w, "AWS_SECRET_ACCESS_KEY="+srv.SecretKey+"x")
			return nil
		}, exitRefused, "credentials rejected"},
		{"no credentials", func(w *env) []string {
			setEnv(w, "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=")
			return nil
		}, exitRefused, "AWS_ACCESS_KEY_ID"},
		{"no permission", func(w *env) []string {
			setEnv(w, "AWS_ACCESS_KEY_ID="+srv.UserAccessKey, "AWS_SECRET_ACCESS_KEY="+srv.UserSecretKey)
			return nil
		}, exitRefused, "permission denied"},
		{"missing bucket", func(w *env) []string {
			w.repo = "s3:" + srv.URL + "/imago-no-such-bucket/nightly"
			return nil
		}, exitNoRepo, "does not exist"},
		{"missing prefix", func(w *env) []string {
			w.repo = "s3:" + srv.URL + "/" + srv.Bucket + "/elsewhere"
			return nil
		}, exitNoRepo, "does not exist"},
		{"closed port", func(w *env) []string {
			w.repo = fmt.Sprintf("s3:http://127.0.0.1:%d/%s/nightly", closedPort(t), srv.Bucket)
			return nil
		}, exitUnreachable, "unreachable"},
	})
}

// TestSFTPSilentServer points a backup at a port that accepts connections
// but never speaks SSH, as a hung host does: the backup gives up within
// the default connection timeout (15 s) with exit 13.
func TestSFTPSilentServer(t *testing.T) {
	t.Parallel() // it only waits
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return // the listener was closed: the test is over
			}
			held = append(held, c)
		}
	}()
	e := &env{t: t, repo: "sftp://nobody@" + l.Addr().String() + "/srv/repo", password: "x",
		extraEnv: []string{"HOME=" + t.TempDir(), "SSH_AUTH_SOCK="}}
	start := time.Now()
	r := e.run("snapshots")
	took := time.Since(start)
	if r.code != exitUnreachable {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, exitUnreachable, r.stderr)
	}
	assertOneLine(t, r.stderr)
	if !strings.Contains(r.stderr, "unreachable") || took > failureBound {
		t.Errorf("took %v and said %q; want \"unreachable\" within %v", took, strings.TrimSpace(r.stderr), failureBound)
	}
}
