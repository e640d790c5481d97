package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// ownerFlags are the host and user name a new key file records, in the
// clear (as restic's do): --host and --user, this machine's when empty.
type ownerFlags struct{ host, user string }

func (o *ownerFlags) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.host, "host", "", "host `name` the new key file records (default: this machine's)")
	cmd.Flags().StringVar(&o.user, "user", "", "user `name` the new key file records (default: the current user's)")
}

// keyOwner returns the host and user name a new key file records.
func keyOwner(o ownerFlags) (host, name string) {
	host, name = o.host, o.user
	if host == "" {
		host, _ = os.Hostname()
	}
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	return host, name
}

func newKeyCommand(g *globalOptions) *cobra.Command {
	var newPasswordFile string
	var owner ownerFlags
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the passwords (key files) of a repository",
	}
	cmd.PersistentFlags().StringVar(&newPasswordFile, "new-password-file", "", "read the new password from `file`")

	newPassword := func() (string, error) {
		if newPasswordFile != "" {
			b, err := os.ReadFile(newPasswordFile)
			if err != nil {
				return "", fmt.Errorf("read new password file: %w", err)
			}
			pw := firstLine(b)
			if pw == "" {
				return "", errors.New("an empty password is not allowed")
			}
			return pw, nil
		}
		pw, err := promptPassword("enter new password: ")
		if err != nil {
			return "", err
		}
		again, err := promptPassword("enter new password again: ")
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

	list := &cobra.Command{
		Use:   "list",
		Short: "List key files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := g.openRepository(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			keys, err := r.ListKeys(ctx)
			if err != nil {
				return err
			}
			if g.json {
				type keyJSON struct {
					ID       string `json:"id"`
					Current  bool   `json:"current"`
					Created  string `json:"created"`
					Host     string `json:"host"`
					Username string `json:"username"`
				}
				out := []keyJSON{}
				for _, k := range keys {
					out = append(out, keyJSON{k.Name, k.Current, k.Created.Format("2006-01-02T15:04:05Z07:00"), k.Host, k.Username})
				}
				return g.printJSON(out)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, " ID\tUser\tHost\tCreated")
			for _, k := range keys {
				mark := " "
				if k.Current {
					mark = "*"
				}
				fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", mark, shortID(k.Name), k.Username, k.Host, k.Created.Local().Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a password",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := g.openRepository(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			pw, err := newPassword()
			if err != nil {
				return err
			}
			host, name := keyOwner(owner)
			id, err := r.AddKey(ctx, pw, kdfParams(), host, name)
			if err != nil {
				return err
			}
			g.printf("saved new key %s\n", shortID(id))
			return nil
		},
	}
	owner.addFlags(add)
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a password (not the one in use, not the last one)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.openRepository(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			if err := r.RemoveKey(ctx, args[0]); err != nil {
				return err
			}
			g.printf("removed key %s\n", args[0])
			return nil
		},
	}
	passwd := &cobra.Command{
		Use:   "passwd",
		Short: "Change the password in use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := g.openRepository(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			pw, err := newPassword()
			if err != nil {
				return err
			}
			if err := r.ChangePassword(ctx, pw, kdfParams()); err != nil {
				return err
			}
			g.printf("password changed\n")
			return nil
		},
	}
	cmd.AddCommand(list, add, remove, passwd)
	return cmd
}
