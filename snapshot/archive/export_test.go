package archive

import (
	"os"

	"golang.org/x/sys/unix"
)

// SetLstatHook makes Run and Scan call fn instead of unix.Lstat.
func SetLstatHook(o *Options, fn func(path string, st *unix.Stat_t) error) { o.lstat = fn }

// SetOpenHook makes Run call fn to open files and directories.
func SetOpenHook(o *Options, fn func(path string, flag int) (*os.File, error)) { o.open = fn }

// SetAfterReadHook makes Run call fn after reading a file and before
// checking whether it changed.
func SetAfterReadHook(o *Options, fn func(path string)) { o.afterRead = fn }
