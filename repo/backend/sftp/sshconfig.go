package sftp

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// systemSSHConfig is OpenSSH's system-wide client configuration.
const systemSSHConfig = "/etc/ssh/ssh_config"

// FromSSHConfig returns c with its zero fields filled from the OpenSSH client
// configuration, ~/.ssh/config first and then /etc/ssh/ssh_config, for the
// Host block matching c.Host: HostName, Port, User, IdentityFile (all of
// them), IdentitiesOnly, UserKnownHostsFile, StrictHostKeyChecking
// (accept-new or no set AcceptNewHostKey; a changed key is refused
// regardless) and ConnectTimeout. Missing files are not an error; a file
// that cannot be parsed is.
func (c Config) FromSSHConfig() (Config, error) {
	var files []string
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".ssh", "config"))
	}
	return c.fromSSHConfigFiles(append(files, systemSSHConfig))
}

// fromSSHConfigFiles is FromSSHConfig reading the given files, the first
// value of each key winning, as in OpenSSH.
func (c Config) fromSSHConfigFiles(files []string) (Config, error) {
	var confs []*ssh_config.Config
	for _, name := range files {
		b, err := os.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return c, fmt.Errorf("sftp: read ssh config: %w", err)
		}
		conf, err := ssh_config.Decode(bytes.NewReader(b))
		if err != nil {
			return c, fmt.Errorf("sftp: ssh config %s: %w", name, err)
		}
		confs = append(confs, conf)
	}
	get := func(key string) (string, error) {
		for _, conf := range confs {
			v, err := conf.Get(c.Host, key)
			if err != nil || v != "" {
				return v, err
			}
		}
		return "", nil
	}
	var errs []error
	value := func(key string) string {
		v, err := get(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		return v
	}

	if c.HostName == "" {
		if v := value("HostName"); v != "" {
			c.HostName = strings.ReplaceAll(v, "%h", c.Host)
		}
	}
	if c.Port == 0 {
		if v := value("Port"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				errs = append(errs, fmt.Errorf("Port: bad value %q", v))
			}
			c.Port = n
		}
	}
	if c.User == "" {
		c.User = value("User")
	}
	if len(c.IdentityFiles) == 0 {
		for _, conf := range confs {
			all, err := conf.GetAll(c.Host, "IdentityFile")
			if err != nil {
				errs = append(errs, fmt.Errorf("IdentityFile: %w", err))
			}
			for _, v := range all {
				if strings.EqualFold(v, "none") {
					continue
				}
				c.IdentityFiles = append(c.IdentityFiles, c.expandTokens(v))
			}
		}
	}
	if !c.IdentitiesOnly {
		c.IdentitiesOnly = strings.EqualFold(value("IdentitiesOnly"), "yes")
	}
	if c.KnownHostsFile == "" {
		// The first of a space-separated list is the one ssh writes to.
		if fields := strings.Fields(value("UserKnownHostsFile")); len(fields) > 0 && fields[0] != "none" {
			c.KnownHostsFile = c.expandTokens(fields[0])
		}
	}
	if !c.AcceptNewHostKey {
		switch strings.ToLower(value("StrictHostKeyChecking")) {
		case "accept-new", "no", "off":
			c.AcceptNewHostKey = true
		}
	}
	if c.ConnectTimeout == 0 {
		if v := value("ConnectTimeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("ConnectTimeout: bad value %q", v))
			}
			c.ConnectTimeout = time.Duration(n) * time.Second
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("sftp: ssh config for %s: %w", c.Host, err)
	}
	return c, nil
}

// expandTokens expands a leading "~/" and the tokens %d (local home), %u
// (local user), %h (remote host), %r (remote user) and %% of a file name in
// ssh_config.
func (c Config) expandTokens(s string) string {
	home, _ := os.UserHomeDir()
	if rest, ok := strings.CutPrefix(s, "~/"); ok && home != "" {
		s = filepath.Join(home, rest)
	}
	if !strings.Contains(s, "%") {
		return s
	}
	host := c.HostName
	if host == "" {
		host = c.Host
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'd':
			b.WriteString(home)
		case 'u':
			b.WriteString(localUser())
		case 'h':
			b.WriteString(host)
		case 'r':
			b.WriteString(c.User)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
