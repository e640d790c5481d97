// Package sftp stores a repository in a folder of an SFTP server, reached
// over SSH (github.com/pkg/sftp over golang.org/x/crypto/ssh).
//
// Locations are written sftp:[user@]host:path or
// sftp://[user@]host[:port]/path (see ParseLocation); Config.FromSSHConfig
// fills what the location leaves open (HostName, Port, User, IdentityFile,
// …) from ~/.ssh/config. Authentication uses key files and ssh-agent; the
// server's host key must be in known_hosts (ErrUnknownHost otherwise) and
// match it (ErrHostKeyMismatch otherwise). Each connection attempt ends
// within Config.ConnectTimeout.
//
// The layout is the one of package local: the config at path/config, other
// files at path/<type>/<name>, packs at path/data/<xx>/<name>. Save writes a
// temporary file ".tmp-…" in the target folder and renames it into place
// (posix-rename@openssh.com, which replaces the target atomically); a
// failed Save removes it, and List never reports such files.
//
// A Backend keeps at most Config.Connections SSH connections, each running
// one call at a time, dialled when first needed. A connection that drops is
// replaced, and the call that saw it fails with an error wrapping a
// backend.TransientError, so the retry wrapper makes it again. Cancelling a
// call's context closes its connection, which ends a request the server
// does not answer.
package sftp
