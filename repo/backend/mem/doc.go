// Package mem is an in-memory backend.Backend for tests: a real
// implementation of the storage contract (it passes the backendtest
// conformance suite) that keeps every file in a map. Raw and SetRaw give
// tests direct access to the stored bytes, so they can corrupt a pack or an
// index file and check that the damage is detected.
package mem
