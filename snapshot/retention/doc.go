// Package retention decides which snapshots a retention policy keeps, for
// the forget command.
//
// Apply is a pure function: it takes the snapshots (as Items: ID, time,
// tags), a Policy, the current time and the time zone whose calendar
// defines hours, days, ISO weeks, months and years, and returns the kept
// snapshots with the reasons that keep them and the removed ones. It never
// reads the clock, so its results are reproducible; the golden tests in
// testdata/ run it over a two-year calendar of synthetic snapshots.
//
// The rules follow restic's forget: count rules keep the newest snapshot of
// each of the N newest calendar buckets, within rules keep what is newer
// than a calendar Duration ("1y2m3d4h") before the newest snapshot, and tag
// rules keep snapshots carrying given tags. GroupBy splits snapshots into
// groups (by host, paths, tags, kind) that the policy is applied to
// separately. The precise semantics, including daylight-saving changes and
// ISO week 53, are documented in docs/RETENTION.md.
//
// The package imports nothing of the module but the standard library: the
// caller converts its snapshot records to Items.
package retention
