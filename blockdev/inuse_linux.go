//go:build linux

package blockdev

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// devNum is a device number as "major:minor", the form sysfs and
// /proc/self/mountinfo use.
type devNum string

func devNumOf(rdev uint64) devNum {
	return devNum(fmt.Sprintf("%d:%d", devMajor(rdev), devMinor(rdev)))
}

// checkNotInUse returns an error wrapping ErrTargetInUse when the block
// device at path, or a partition of it, is mounted, used as swap, or held
// by another block device (device mapper, md). Opening the device with
// O_EXCL afterwards catches what these files do not show.
func checkNotInUse(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	dev := devNumOf(st.Rdev)
	devs := map[devNum]string{dev: path}
	sys := "/sys/dev/block/" + string(dev)
	entries, _ := os.ReadDir(sys) // no sysfs: rely on O_EXCL
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(sys, e.Name(), "partition")); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sys, e.Name(), "dev"))
		if err == nil {
			devs[devNum(strings.TrimSpace(string(b)))] = "/dev/" + e.Name()
		}
	}
	for d, name := range devs {
		holders, _ := os.ReadDir("/sys/dev/block/" + string(d) + "/holders")
		if len(holders) > 0 {
			return fmt.Errorf("%w: %s is held by %s", ErrTargetInUse, name, holders[0].Name())
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		if name, mp, ok := mountedIn(mi, devs, statDevNum); ok {
			return fmt.Errorf("%w: %s is mounted on %s", ErrTargetInUse, name, mp)
		}
	}
	if sw, err := os.ReadFile("/proc/swaps"); err == nil {
		if name, ok := swapIn(sw, devs, statDevNum); ok {
			return fmt.Errorf("%w: %s is used as swap", ErrTargetInUse, name)
		}
	}
	return nil
}

// statDevNum returns the device number of the block device at path.
func statDevNum(path string) (devNum, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return "", false
	}
	return devNumOf(st.Rdev), true
}

// mountedIn looks for a mount of one of devs in the /proc/self/mountinfo
// text mi, by the major:minor field or, for file systems that report an
// anonymous device number (btrfs), by the mount source resolved with
// resolve. It returns the device's name and the mount point.
func mountedIn(mi []byte, devs map[devNum]string, resolve func(string) (devNum, bool)) (name, mountPoint string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(mi))
	sc.Buffer(nil, 1<<20) // mount options can be long
	for sc.Scan() {
		// "36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/sda1 rw"
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeOctal(fields[4])
		if name, ok := devs[devNum(fields[2])]; ok {
			return name, mp, true
		}
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) && strings.HasPrefix(fields[i+2], "/") {
				if d, ok := resolve(unescapeOctal(fields[i+2])); ok {
					if name, ok := devs[d]; ok {
						return name, mp, true
					}
				}
				break
			}
		}
	}
	return "", "", false
}

// swapIn looks for one of devs in the /proc/swaps text sw.
func swapIn(sw []byte, devs map[devNum]string, resolve func(string) (devNum, bool)) (name string, ok bool) {
	lines := strings.Split(string(sw), "\n")
	for _, l := range lines[min(1, len(lines)):] { // the first line is a header
		fields := strings.Fields(l)
		if len(fields) == 0 {
			continue
		}
		if d, ok := resolve(unescapeOctal(fields[0])); ok {
			if name, ok := devs[d]; ok {
				return name, true
			}
		}
	}
	return "", false
}

// unescapeOctal undoes the \ooo escapes the kernel writes for spaces,
// tabs, newlines and backslashes in paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
