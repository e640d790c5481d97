// Package local stores a repository in a folder of the local file system.
//
// The layout is the one of docs/FORMAT.md: the config at dir/config, other
// files at dir/<type>/<name>, and packs sharded by the first two characters
// of their name at dir/data/<xx>/<name>. Folders are created with mode 0700
// and files with mode 0600.
//
// Save is atomic and durable: it writes a temporary file named ".tmp-…" in
// the target folder, syncs it, renames it into place and syncs the folder.
// A failed Save removes its temporary file; List never reports temporary
// files, including those a crash left behind.
//
// On Linux a caller can also write a file in place: CreateTempFile makes an
// unnamed file (O_TMPFILE) in the repository, and SaveFile links it under a
// ".tmp-…" name, renames it into place and syncs the folder, without
// copying it. The repository's write session writes its packs this way.
package local
