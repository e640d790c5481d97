// Package location opens the backend a repository location names.
//
// A location is one of
//
//	/path/to/repo, ./repo, local:PATH     a folder on this machine (package local)
//	sftp:[user@]host:path                 a folder on an SFTP server (package sftp)
//	sftp://[user@]host[:port]/path
//	s3:https://host[:port]/bucket[/prefix] an S3 bucket (package s3)
//	s3:host[:port]/bucket[/prefix]
//
// Anything else that looks like "scheme:..." (a word of letters followed by
// a colon, not a Windows drive letter) is refused with an error naming the
// known schemes, so a typo such as "sfpt:host:/x" never becomes a local
// folder called "sfpt:host:".
//
// Options (-o key=value on the command line) are passed as a map; each
// backend reads the keys with its own prefix ("sftp.", "s3.") and refuses
// unknown keys of its prefix. Keys of another backend are ignored, so one
// option set can be used with every location. See Options for the list.
//
// Every remote backend is wrapped in package retry, so that transient
// errors (dropped connections, throttling) are retried with exponential
// backoff and a bound; the local backend is not. The number of connections
// a remote backend opens is bounded by the backend itself
// ("sftp.connections", "s3.connections").
package location
