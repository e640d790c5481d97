// Package filter matches slash-separated absolute paths against
// gitignore/restic-style patterns, for backup --exclude and --exclude-file
// and for restore --include.
//
// A pattern is a list of components separated by '/'. Within a component,
// '*' matches any run of bytes, '?' matches one character, '[...]' matches a
// character class and '\' escapes the next character (the syntax of
// path.Match). A component "**" matches zero or more whole components.
//
// A pattern that starts with '/' is anchored at the root: "/home/u/cache"
// matches only that path. Any other pattern may start at any depth, as if it
// began with "/**/": "cache" matches a component named cache anywhere, and
// "u/cache" matches /home/u/cache as well as /u/cache. A pattern that matches
// a path also matches everything below it, so excluding a directory excludes
// its contents. A trailing '/' restricts the pattern to directories (what lies
// below a matched directory still matches).
//
// A leading '!' negates a pattern: a path that it matches is not matched,
// unless a later pattern matches it again. The last pattern that matches a
// path decides.
package filter
