package location

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/local"
	"github.com/imagobackup/imago/repo/backend/retry"
	"github.com/imagobackup/imago/repo/backend/s3"
	"github.com/imagobackup/imago/repo/backend/sftp"
)

// Scheme names the kind of backend a location names.
type Scheme string

// The schemes Open knows.
const (
	Local Scheme = "local"
	SFTP  Scheme = "sftp"
	S3    Scheme = "s3"
)

// ErrUnknownScheme is wrapped by the error for a location of the form
// "scheme:..." whose scheme is not one of Local, SFTP, S3.
var ErrUnknownScheme = errors.New("unknown location scheme")

// Options lists the option keys the backends understand, for help texts.
var Options = []string{
	"s3.bucket-lookup=auto|path|dns",
	"s3.connections=N",
	"s3.profile=NAME",
	"s3.region=NAME",
	"sftp.accept-new-host-key=true|false",
	"sftp.connect-timeout=DURATION",
	"sftp.connections=N",
	"sftp.identities-only=true|false",
	"sftp.identity=FILE",
	"sftp.known-hosts=FILE",
	"sftp.ssh-config=true|false",
}

// Parse returns the scheme of loc and, for Local, the folder path. An empty
// location or an unknown scheme is an error.
func Parse(loc string) (Scheme, string, error) {
	if loc == "" {
		return "", "", errors.New("empty repository location")
	}
	scheme, rest, ok := strings.Cut(loc, ":")
	if !ok || !isSchemeWord(scheme) {
		// A plain path, also one with a colon after a '/' ("./a:b").
		return Local, loc, nil
	}
	switch Scheme(scheme) {
	case Local:
		if rest == "" {
			return "", "", fmt.Errorf("location %q: local: needs a path", loc)
		}
		return Local, rest, nil
	case SFTP:
		return SFTP, "", nil
	case S3:
		return S3, "", nil
	}
	return "", "", fmt.Errorf("location %q: %w %q (want a path, local:PATH, sftp:… or s3:…)", loc, ErrUnknownScheme, scheme)
}

// isSchemeWord reports whether s looks like a scheme: at least two ASCII
// letters, digits, '+', '-' or '.', starting with a letter. A single letter
// is a Windows drive ("C:\repo"), not a scheme.
func isSchemeWord(s string) bool {
	if len(s) < 2 {
		return false
	}
	for i, c := range s {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !letter && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// Open opens the backend at loc with opts. With create, the location is
// made when missing (folder, bucket); whether it may hold a new repository
// is the caller's decision. A location that does not exist (create unset)
// gives an error wrapping backend.ErrNotExist. Remote backends are wrapped
// in retry.New with the default bounds. Options of an unknown backend
// prefix are an error, so a misspelt "-o s3.regoin=x" is not ignored.
func Open(ctx context.Context, loc string, opts map[string]string, create bool) (backend.Backend, error) {
	if err := checkPrefixes(opts); err != nil {
		return nil, err
	}
	scheme, path, err := Parse(loc)
	if err != nil {
		return nil, err
	}
	switch scheme {
	case Local:
		if create {
			return local.Create(path)
		}
		return local.Open(path)
	case SFTP:
		cfg, err := sftpConfig(loc, opts)
		if err != nil {
			return nil, err
		}
		var be *sftp.Backend
		if create {
			be, err = sftp.Create(ctx, cfg)
		} else {
			be, err = sftp.Open(ctx, cfg)
		}
		if err != nil {
			return nil, err
		}
		return retry.New(be, retry.Options{}), nil
	case S3:
		cfg, err := s3.ParseLocation(loc)
		if err != nil {
			return nil, err
		}
		if err := cfg.ApplyOptions(opts); err != nil {
			return nil, err
		}
		var be *s3.Backend
		if create {
			be, err = s3.Create(ctx, cfg)
		} else {
			be, err = s3.Open(ctx, cfg)
		}
		if err != nil {
			return nil, err
		}
		return retry.New(be, retry.Options{}), nil
	}
	return nil, fmt.Errorf("location %q: %w", loc, ErrUnknownScheme) // not reached: Parse knows every scheme
}

// checkPrefixes refuses option keys that belong to no backend.
func checkPrefixes(opts map[string]string) error {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, "s3.") && !strings.HasPrefix(k, "sftp.") {
			return fmt.Errorf("unknown option %q: options start with s3. or sftp. (known: %s)", k, strings.Join(Options, ", "))
		}
	}
	return nil
}

// sftpConfig parses an sftp location and applies the "sftp." options:
// ~/.ssh/config is read unless sftp.ssh-config=false.
func sftpConfig(loc string, opts map[string]string) (sftp.Config, error) {
	cfg, err := sftp.ParseLocation(loc)
	if err != nil {
		return sftp.Config{}, err
	}
	useSSHConfig := true
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first error reported does not depend on map order
	for _, k := range keys {
		v := opts[k]
		var err error
		switch k {
		case "sftp.connections":
			var n int
			n, err = strconv.Atoi(v)
			if err == nil && (n < 1 || n > sftp.MaxConnections) {
				err = fmt.Errorf("want a number from 1 to %d", sftp.MaxConnections)
			}
			cfg.Connections = n
		case "sftp.connect-timeout":
			var d time.Duration
			d, err = time.ParseDuration(v)
			if err == nil && d <= 0 {
				err = errors.New("want a positive duration")
			}
			cfg.ConnectTimeout = d
		case "sftp.identity":
			cfg.IdentityFiles = append(cfg.IdentityFiles, v)
		case "sftp.identities-only":
			cfg.IdentitiesOnly, err = strconv.ParseBool(v)
		case "sftp.known-hosts":
			cfg.KnownHostsFile = v
		case "sftp.accept-new-host-key":
			cfg.AcceptNewHostKey, err = strconv.ParseBool(v)
		case "sftp.ssh-config":
			useSSHConfig, err = strconv.ParseBool(v)
		default:
			if strings.HasPrefix(k, "sftp.") {
				return sftp.Config{}, fmt.Errorf("sftp: unknown option %q (known: %s)", k, strings.Join(sftpKeys(), ", "))
			}
		}
		if err != nil {
			return sftp.Config{}, fmt.Errorf("sftp: option %s=%q: %w", k, v, err)
		}
	}
	if useSSHConfig {
		if cfg, err = cfg.FromSSHConfig(); err != nil {
			return sftp.Config{}, fmt.Errorf("sftp: %w", err)
		}
	}
	return cfg, nil
}

// sftpKeys returns the "sftp." option keys.
func sftpKeys() []string {
	var ks []string
	for _, o := range Options {
		if k, _, _ := strings.Cut(o, "="); strings.HasPrefix(k, "sftp.") {
			ks = append(ks, k)
		}
	}
	return ks
}
