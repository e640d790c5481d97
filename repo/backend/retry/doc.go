// Package retry wraps a backend.Backend so that calls failing with a
// transient error (one wrapping a *backend.TransientError) are made again
// after an exponentially growing, jittered pause.
//
// Errors wrapping backend.ErrNotExist and context errors are never retried,
// nor is any error that is not marked transient. Save re-reads its source
// from offset 0 on every attempt. Load is retried only when the failure came
// before its callback ran, or when the callback's own error is transient
// (the callback must then be safe to call again, as backend.Backend
// documents). List is retried only before its callback first ran, so no
// file is reported twice.
package retry
