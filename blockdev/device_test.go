//go:build linux

package blockdev

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagobackup/imago/snapshot"
)

// loopDevice attaches a loop device to a new file of size bytes filled
// with 0xee, or skips the test when loop devices are not available. The
// device is detached when the test ends.
func loopDevice(t *testing.T, size int64) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	backing = filepath.Join(t.TempDir(), "backing.img")
	writeAt(t, backing, 0, bytes.Repeat([]byte{0xee}, int(size)))
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

// TestDevice backs up a loop device (size from the ioctl, no holes),
// restores an image onto it (holes written as zeros unless Sparse) and
// checks the refusals: too small, mounted.
func TestDevice(t *testing.T) {
	dev, backing := loopDevice(t, 4*miB)
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: testParams, SegmentSize: testSegment}

	src, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !src.Device() || src.Size() != 4*miB {
		t.Fatalf("device %v size %d, want a 4 MiB device", src.Device(), src.Size())
	}
	res, err := Backup(context.Background(), src, m, storeHasher{m}, opts)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesRead != 4*miB || res.Digest != imageDigestHex(readFile(t, backing)) {
		t.Fatalf("read %d bytes, digest %s", res.BytesRead, res.Digest)
	}

	// An image with a hole, smaller than the device.
	imgPath := filepath.Join(t.TempDir(), "small.img")
	truncate(t, imgPath, 2*miB)
	writeAt(t, imgPath, 0, randomBytes(1, 300*kiB))
	img := backupPath(t, imgPath, m, opts)

	for _, sparse := range []bool{false, true} {
		tgt, err := OpenTarget(dev, int64(img.Size), TargetOptions{Sparse: sparse})
		if err != nil {
			t.Fatal(err)
		}
		if !tgt.Device() {
			t.Fatal("target is not a device")
		}
		err = Restore(context.Background(), m, img.Content, int64(img.Size), tgt, RestoreOptions{Digest: img.Digest})
		tgt.Close()
		if err != nil {
			t.Fatalf("restore (sparse %v): %v", sparse, err)
		}
		got := readFile(t, backing)
		want := readFile(t, imgPath)
		if sparse {
			// The hole was skipped: the device keeps what it held there.
			want = append(append([]byte(nil), want[:300*kiB]...), got[300*kiB:2*miB]...)
		}
		if !bytes.Equal(got[:2*miB], want) {
			t.Fatalf("device holds other bytes than the image (sparse %v)", sparse)
		}
		if !bytes.Equal(got[2*miB:], bytes.Repeat([]byte{0xee}, 2*miB)) {
			t.Fatal("restore wrote past the image")
		}
		writeAt(t, backing, 300*kiB, bytes.Repeat([]byte{0xee}, 2*miB-300*kiB))
	}

	if _, err := OpenTarget(dev, 4*miB+1, TargetOptions{}); !errors.Is(err, ErrTargetTooSmall) {
		t.Errorf("image larger than the device: got %v, want ErrTargetTooSmall", err)
	}

	t.Run("mounted", func(t *testing.T) {
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
			t.Skipf("mkfs.ext4: %v: %s", err, out)
		}
		mnt := t.TempDir()
		if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
			t.Skipf("mount: %v: %s", err, out)
		}
		defer func() {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount: %v: %s", err, out)
			}
		}()
		_, err := OpenTarget(dev, 1*miB, TargetOptions{})
		if !errors.Is(err, ErrTargetInUse) || !strings.Contains(err.Error(), mnt) {
			t.Fatalf("mounted device: got %v, want ErrTargetInUse naming %s", err, mnt)
		}
	})
}
