package repo

import "errors"

// Sentinel errors. Callers branch on them with errors.Is; cmd/imago maps
// them to exit codes.
var (
	// ErrNoRepository means the backend holds no config file.
	ErrNoRepository = errors.New("repo: no repository at this location")

	// ErrWrongPassword means no key file opens with the password. A key
	// file whose sealed master key was damaged looks the same as a wrong
	// password: the authenticated encryption cannot tell the two apart.
	ErrWrongPassword = errors.New("repo: wrong password or no key found")

	// ErrLocked means another process holds a conflicting lock.
	ErrLocked = errors.New("repo: repository is locked")

	// ErrAlreadyInitialized means Init found an existing config file.
	ErrAlreadyInitialized = errors.New("repo: repository already initialized")
)
