package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo"
)

func newInitCommand(g *globalOptions) *cobra.Command {
	var compression string
	var packSizeMiB int
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new repository",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			loc, err := g.location()
			if err != nil {
				return err
			}
			level, err := pack.ParseCompressionLevel(compression)
			if err != nil {
				return err
			}
			if packSizeMiB < 1 || packSizeMiB > 128 {
				return fmt.Errorf("--pack-size must be between 1 and 128 MiB")
			}
			pw, err := g.readNewPassword()
			if err != nil {
				return err
			}
			be, err := openBackend(loc, true)
			if err != nil {
				return fmt.Errorf("create repository %s: %w", loc, err)
			}
			defer be.Close()
			host, _ := os.Hostname()
			username := ""
			if u, err := user.Current(); err == nil {
				username = u.Username
			}
			r, err := repo.Init(ctx, be, pw, repo.InitOptions{
				KDF: kdfParams(), Compression: level, PackSize: packSizeMiB << 20,
				Host: host, Username: username,
			})
			if errors.Is(err, repo.ErrAlreadyInitialized) {
				return fmt.Errorf("repository %s already exists", loc)
			}
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]string{"message_type": "initialized", "id": r.Config().ID, "repository": loc})
			}
			g.printf("created imago repository %s at %s\n", shortID(r.Config().ID), loc)
			g.printf("Keep the password safe: without it the data cannot be read.\n")
			return nil
		},
	}
	cmd.Flags().StringVar(&compression, "compression", "default", "compression `level`: off, fastest, default, better")
	cmd.Flags().IntVar(&packSizeMiB, "pack-size", 16, "target pack size in `MiB`")
	return cmd
}

// readNewPassword reads a new password; on a terminal it asks twice.
func (g *globalOptions) readNewPassword() (string, error) {
	if _, ok := os.LookupEnv("IMAGO_PASSWORD"); ok || g.passwordFile != "" || g.passwordCommand != "" {
		pw, err := g.readPassword("")
		if err == nil && pw == "" {
			err = errors.New("an empty password is not allowed")
		}
		return pw, err
	}
	pw, err := promptPassword("enter password for new repository: ")
	if err != nil {
		return "", err
	}
	again, err := promptPassword("enter password again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("passwords do not match")
	}
	if pw == "" {
		return "", errors.New("an empty password is not allowed")
	}
	return pw, nil
}
