// Package imago is the root of the imago module: a deduplicating, encrypted
// backup tool for file trees and whole disks. The command is cmd/imago; the
// layers below it are described in docs/ARCHITECTURE.md. This package holds
// only module-wide tests (the layering rule).
package imago
