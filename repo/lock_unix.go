//go:build unix

package repo

import (
	"errors"
	"syscall"
)

// processExists reports whether a process with this pid runs on this host.
// Signal 0 checks existence and permission without sending anything; EPERM
// means the process exists but belongs to someone else.
func processExists(pid int) bool {
	if pid <= 0 {
		return false // never a real holder; 0 and -1 address process groups
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
