// Package nbd serves images over the Network Block Device protocol, so that
// any image snapshot can be read (and, through a local copy-on-write
// overlay, written) by qemu, nbdcopy, nbdinfo or the kernel's NBD client
// without restoring it first.
//
// The server speaks the fixed newstyle handshake (NBD_OPT_EXPORT_NAME,
// NBD_OPT_INFO, NBD_OPT_GO, NBD_OPT_LIST, NBD_OPT_ABORT; other options are
// answered NBD_REP_ERR_UNSUP) and simple replies in the transmission phase
// (NBD_CMD_READ, WRITE, DISC, FLUSH, TRIM, WRITE_ZEROES). An export without
// an overlay is advertised read-only, and writes, trims and zeroing are
// refused with EPERM. An export with an Overlay takes writes into a local
// sparse file; the repository is never written.
//
// Every connection runs in its own goroutine and handles up to a bounded
// number of requests (and request bytes) at once; replies may come out of
// order, matched by their cookies, as the protocol allows. A connection
// that fails or disconnects mid-request ends alone: the others go on.
//
// Client is a minimal client of the same protocol, for tests and
// benchmarks.
package nbd
