package blockdev

import "errors"

var (
	// ErrSourceChanged is wrapped by the error Backup returns when the source
	// changed size or ended early while it was read: the image would not be
	// the one the source held, so no result is returned.
	ErrSourceChanged = errors.New("blockdev: source changed size while it was read")

	// ErrTargetTooSmall is wrapped by the error OpenTarget returns when a
	// block device cannot hold the image.
	ErrTargetTooSmall = errors.New("blockdev: target device is smaller than the image")

	// ErrTargetInUse is wrapped by the error OpenTarget returns when a block
	// device, or one of its partitions, is mounted, used as swap or held by
	// another device (device mapper, md).
	ErrTargetInUse = errors.New("blockdev: target device is in use")

	// ErrDigestMismatch is wrapped by the error Restore returns when the
	// restored image does not have the expected digest.
	ErrDigestMismatch = errors.New("blockdev: restored image does not match its digest")
)
