package sftp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults and bounds of the Config fields.
const (
	// DefaultConnections is the number of SSH connections a backend opens
	// at most when Config.Connections is 0. Four keep a 2-core client busy
	// uploading packs while a fifth caller waits; each connection costs a
	// process on the server and ~100 KiB here.
	DefaultConnections = 4
	// MaxConnections bounds Config.Connections: OpenSSH's default
	// MaxStartups (10 unauthenticated connections) and a server's process
	// limit make more connections counterproductive.
	MaxConnections = 32
	// DefaultConnectTimeout bounds one connection attempt (TCP connect,
	// SSH handshake, authentication, SFTP start) when Config.ConnectTimeout
	// is 0.
	DefaultConnectTimeout = 15 * time.Second
	// defaultPort is the SSH port.
	defaultPort = 22
	// defaultKeepalive is how often a connection is probed: as ssh's
	// ServerAliveInterval commonly set, cheap (one small packet).
	defaultKeepalive = 15 * time.Second
)

// Config says where a repository is and how to reach it. The zero value of
// every field but Host and Path means "the default"; FromSSHConfig fills
// zero fields from ~/.ssh/config first.
type Config struct {
	// User is the remote user name; empty: the local user's name.
	User string
	// Host is the host as written in the location: a host name, an IP
	// address, or a Host alias of ~/.ssh/config.
	Host string
	// HostName is the address to connect to, e.g. from a HostName line of
	// ~/.ssh/config; empty: Host. Host keys are looked up under it.
	HostName string
	// Port is the SSH port; 0: 22.
	Port int
	// Path is the repository folder on the server. A relative path starts
	// at the user's login folder.
	Path string
	// IdentityFiles are private key files to authenticate with, tried in
	// order; empty: ~/.ssh/id_ed25519, id_ecdsa and id_rsa, those that
	// exist. Keys protected by a passphrase are skipped (load them into
	// ssh-agent instead).
	IdentityFiles []string
	// IdentitiesOnly, when set, authenticates with IdentityFiles only and
	// never asks ssh-agent (SSH_AUTH_SOCK).
	IdentitiesOnly bool
	// KnownHostsFile holds the known host keys; empty: ~/.ssh/known_hosts
	// and, if it exists, /etc/ssh/ssh_known_hosts. A missing file knows no
	// host.
	KnownHostsFile string
	// AcceptNewHostKey accepts the key of a host not yet known and appends
	// it to KnownHostsFile, like OpenSSH's StrictHostKeyChecking=accept-new.
	// A key that differs from a known one is refused either way. Off (the
	// zero value), an unknown host is an error wrapping ErrUnknownHost.
	AcceptNewHostKey bool
	// Connections bounds the SSH connections, and so the concurrent calls,
	// of the backend; 0: DefaultConnections; at most MaxConnections.
	Connections int
	// ConnectTimeout bounds each connection attempt; 0:
	// DefaultConnectTimeout. A connection whose server stops answering
	// keepalives for that long is closed.
	ConnectTimeout time.Duration

	// keepalive is how often an idle or busy connection checks that the
	// server still answers; 0: defaultKeepalive. Tests shorten it.
	keepalive time.Duration
}

// ErrLocation is wrapped by the error ParseLocation returns for a location
// it cannot read.
var ErrLocation = errors.New("invalid sftp location")

// ParseLocation reads a repository location of one of the forms
//
//	sftp:[user@]host:path          (scp-like; path absolute or relative to the login folder)
//	sftp://[user@]host[:port]/path (URL; path absolute, "/~/path" relative to the login folder)
//
// A leading "~/" of an scp-like path is dropped, since SFTP starts in the
// login folder. IPv6 addresses are written in brackets: sftp:[::1]:/srv/repo.
// Only the named fields of the returned Config are set.
func ParseLocation(loc string) (Config, error) {
	rest, ok := strings.CutPrefix(loc, "sftp:")
	if !ok {
		return Config{}, fmt.Errorf("%w %q: does not start with sftp:", ErrLocation, loc)
	}
	var cfg Config
	var err error
	if strings.HasPrefix(rest, "//") {
		cfg, err = parseURL(loc)
	} else {
		cfg, err = parseSCP(rest)
	}
	if err != nil {
		return Config{}, fmt.Errorf("%w %q: %v", ErrLocation, loc, err)
	}
	if cfg.Host == "" {
		return Config{}, fmt.Errorf("%w %q: no host", ErrLocation, loc)
	}
	if strings.ContainsAny(cfg.Host, "/@ ") || strings.ContainsAny(cfg.User, "/:@ ") {
		return Config{}, fmt.Errorf("%w %q: bad user or host", ErrLocation, loc)
	}
	if cfg.Path == "" || strings.ContainsRune(cfg.Path, 0) {
		return Config{}, fmt.Errorf("%w %q: no repository path", ErrLocation, loc)
	}
	return cfg, nil
}

// parseURL reads sftp://[user@]host[:port]/path.
func parseURL(loc string) (Config, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return Config{}, errors.Unwrap(err) // url.Error repeats the location.
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Config{}, errors.New("query or fragment not allowed")
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		return Config{}, errors.New("passwords are not supported; use a key or ssh-agent")
	}
	cfg := Config{User: u.User.Username(), Host: u.Hostname()}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Config{}, fmt.Errorf("bad port %q", p)
		}
		cfg.Port = n
	}
	switch {
	case u.Path == "/~" || u.Path == "/~/":
		cfg.Path = "."
	case strings.HasPrefix(u.Path, "/~/"):
		cfg.Path = cleanPath(u.Path[len("/~/"):])
	case u.Path != "" && u.Path != "/":
		cfg.Path = cleanPath(u.Path)
	}
	return cfg, nil
}

// parseSCP reads [user@]host:path, the part after "sftp:".
func parseSCP(s string) (Config, error) {
	var cfg Config
	if at := strings.IndexByte(s, '@'); at >= 0 && !strings.ContainsAny(s[:at], ":/[") {
		cfg.User, s = s[:at], s[at+1:]
		if cfg.User == "" {
			return Config{}, errors.New("empty user name")
		}
	}
	var p string
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return Config{}, errors.New("want [address]:path")
		}
		cfg.Host, p = s[1:end], s[end+2:]
	} else {
		var ok bool
		cfg.Host, p, ok = strings.Cut(s, ":")
		if !ok {
			return Config{}, errors.New("want host:path")
		}
	}
	switch {
	case p == "~":
		p = "."
	case strings.HasPrefix(p, "~/"):
		p = p[2:]
	}
	if p != "" {
		cfg.Path = cleanPath(p)
	}
	return cfg, nil
}

// cleanPath cleans a remote path, keeping it relative or absolute.
func cleanPath(p string) string { return path.Clean(p) }

// String returns the location in the URL form, which ParseLocation reads
// back into the same User, Host, Port and Path.
func (c Config) String() string {
	u := url.URL{Scheme: "sftp", Host: c.Host}
	if strings.Contains(c.Host, ":") {
		u.Host = "[" + c.Host + "]"
	}
	if c.Port != 0 {
		u.Host = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	}
	if c.User != "" {
		u.User = url.User(c.User)
	}
	switch {
	case path.IsAbs(c.Path):
		u.Path = c.Path
	case c.Path == "." || c.Path == "":
		u.Path = "/~"
	default:
		u.Path = "/~/" + c.Path
	}
	return u.String()
}

// withDefaults returns c with every zero field but Host and Path set to its
// default. It reads the environment (the local user, $HOME), no files.
func (c Config) withDefaults() (Config, error) {
	if c.Host == "" || c.Path == "" {
		return c, errors.New("sftp: config needs a host and a path")
	}
	if c.HostName == "" {
		c.HostName = c.Host
	}
	if c.Port == 0 {
		c.Port = defaultPort
	}
	if c.Port < 0 || c.Port > 65535 {
		return c, fmt.Errorf("sftp: bad port %d", c.Port)
	}
	if c.User == "" {
		c.User = localUser()
		if c.User == "" {
			return c, errors.New("sftp: no user name given and the local one is unknown")
		}
	}
	home, _ := os.UserHomeDir() // Without a home, only explicit files are used.
	if len(c.IdentityFiles) == 0 && home != "" {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			c.IdentityFiles = append(c.IdentityFiles, filepath.Join(home, ".ssh", name))
		}
	}
	if c.Connections <= 0 {
		c.Connections = DefaultConnections
	}
	c.Connections = min(c.Connections, MaxConnections)
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.keepalive <= 0 {
		c.keepalive = defaultKeepalive
	}
	return c, nil
}

// knownHostsFiles returns the known_hosts files to read and the one to
// append accepted keys to.
func (c Config) knownHostsFiles() (read []string, write string) {
	if c.KnownHostsFile != "" {
		return []string{c.KnownHostsFile}, c.KnownHostsFile
	}
	if home, err := os.UserHomeDir(); err == nil {
		write = filepath.Join(home, ".ssh", "known_hosts")
		read = append(read, write)
	}
	return append(read, systemKnownHosts), write
}

// systemKnownHosts is the system-wide known_hosts file of OpenSSH.
const systemKnownHosts = "/etc/ssh/ssh_known_hosts"

// localUser returns the name of the user running the process.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

// addr returns HostName:Port.
func (c Config) addr() string {
	return net.JoinHostPort(c.HostName, strconv.Itoa(c.Port))
}
