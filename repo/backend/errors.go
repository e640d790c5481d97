package backend

import (
	"errors"
	"fmt"
	"strings"
)

// TransientError marks a failure that may succeed when the same call is made
// again: a dropped connection, a timeout on the server side, a rate limit.
// The retry wrapper retries exactly the errors that wrap a TransientError.
type TransientError struct {
	Err error
}

// Error returns the message of the wrapped error, marked as transient.
func (e *TransientError) Error() string {
	if e.Err == nil {
		return "transient error"
	}
	return "transient: " + e.Err.Error()
}

// Unwrap returns the wrapped error.
func (e *TransientError) Unwrap() error { return e.Err }

// IsTransient reports whether err wraps a *TransientError.
func IsTransient(err error) bool {
	var t *TransientError
	return errors.As(err, &t)
}

// ErrInvalidHandle is wrapped by the error every backend returns for a handle
// that cannot name a file (see Handle.Validate).
var ErrInvalidHandle = errors.New("invalid file handle")

// Validate reports whether h can name a file, with an error wrapping
// ErrInvalidHandle if not. The type must be one of FileTypes; a Config
// handle has an empty Name; every other Name is non-empty, contains no '/',
// '\\' or NUL and does not start with '.' (backends keep temporary files
// under such names); a Pack name has at least two characters, its shard.
func (h Handle) Validate() error {
	known := false
	for _, t := range FileTypes {
		if h.Type == t {
			known = true
			break
		}
	}
	reason := ""
	switch {
	case !known:
		reason = "unknown file type"
	case h.Type == Config && h.Name != "":
		reason = "config takes no name"
	case h.Type == Config:
		return nil
	case h.Name == "":
		reason = "empty name"
	case strings.ContainsAny(h.Name, "/\\\x00"):
		reason = "name contains a path separator or NUL"
	case h.Name[0] == '.':
		reason = "name starts with '.'"
	case h.Type == Pack && len(h.Name) < 2:
		reason = "pack name shorter than its two-character shard"
	default:
		return nil
	}
	return fmt.Errorf("%w %q/%q: %s", ErrInvalidHandle, h.Type, h.Name, reason)
}
