//go:build !linux

package blockdev

import (
	"errors"
	"io"
	"os"
)

func deviceSize(f *os.File) (int64, error) { return f.Seek(0, io.SeekEnd) }

var errNoSeekData = errors.New("SEEK_DATA not supported")

func seekData(*os.File, int64) (int64, bool, error) { return 0, false, errNoSeekData }
func seekHole(*os.File, int64) (int64, bool, error) { return 0, false, errNoSeekData }
func dropCache(*os.File, int64, int64)              {}
func adviseSequential(*os.File)                     {}
func mostlyCached(*os.File, int64, int64) bool      { return false }
func mapHuge(int) ([]byte, func())                  { return nil, nil }

// openDirect: O_DIRECT is Linux's; other systems read and write through
// their cache.
func openDirect(*os.File, int, bool) *os.File { return nil }

func openDeviceExclusive(path string) (*os.File, error) { return os.OpenFile(path, os.O_WRONLY, 0) }

func devMajor(dev uint64) uint32 { return uint32(dev >> 8) }
func devMinor(dev uint64) uint32 { return uint32(dev & 0xff) }
