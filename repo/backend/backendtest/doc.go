// Package backendtest holds the conformance suite of the storage contract in
// package backend. Every backend and every wrapper runs it from its own
// tests:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Backend { return mem.New() })
//	}
//
// The suite only uses the Backend interface, so a failure points at a
// difference between the implementation and the documented contract.
package backendtest
