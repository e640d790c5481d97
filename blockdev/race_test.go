//go:build race

package blockdev

// raceEnabled is set when the tests run under the race detector, which
// slows hashing so much that the largest images are scaled down.
const raceEnabled = true
