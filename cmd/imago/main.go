// Command imago is a deduplicating, encrypted backup tool for file trees and
// whole disks. This package only wires commands to the library packages:
// flags, prompts, progress and exit codes live here, repository logic does not.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imagobackup/imago/repo"
)

// Exit codes, documented in the README; scripts rely on them.
const (
	exitOK          = 0
	exitError       = 1
	exitPartial     = 3  // backup finished, but some source files were unreadable
	exitNoRepo      = 10 // the repository does not exist
	exitWrongPass   = 11 // no key file opens with the password
	exitLocked      = 12 // the repository is locked by another process
	exitInterrupted = 130
)

// errPartial marks a backup that completed with unreadable files.
var errPartial = errors.New("some source files could not be read")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the process exit code.
func run(ctx context.Context, args []string) int {
	g := &globalOptions{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	root := newRootCommand(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(ctx, err)
	if code != exitPartial {
		fmt.Fprintf(g.stderr, "imago: %v\n", err)
	}
	return code
}

// exitCode maps an error to the documented exit code.
func exitCode(ctx context.Context, err error) int {
	switch {
	case errors.Is(err, errPartial):
		return exitPartial
	case errors.Is(err, repo.ErrNoRepository):
		return exitNoRepo
	case errors.Is(err, repo.ErrWrongPassword):
		return exitWrongPass
	case errors.Is(err, repo.ErrLocked):
		return exitLocked
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}
