// Package faulty wraps a backend.Backend for tests: it fails chosen calls,
// truncates loads, injects transient errors, and counts what passes through,
// so tests can check both how the layers above react to a misbehaving store
// and how much they read and write ("no data pack was read", "the second
// backup uploaded less than 1 MiB").
//
// Every knob may be changed at any time, also while other goroutines use the
// backend. A call that a knob fails is not passed on: nothing is saved,
// loaded or removed.
package faulty
