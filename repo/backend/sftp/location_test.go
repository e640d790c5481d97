package sftp

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestParseLocation(t *testing.T) {
	tests := []struct {
		loc  string
		want Config
	}{
		{"sftp:alice@example.com:/srv/repo", Config{User: "alice", Host: "example.com", Path: "/srv/repo"}},
		{"sftp:example.com:/srv/repo/", Config{Host: "example.com", Path: "/srv/repo"}},
		{"sftp:backup:repos/laptop", Config{Host: "backup", Path: "repos/laptop"}},
		{"sftp:host:~/repo", Config{Host: "host", Path: "repo"}},
		{"sftp:host:~", Config{Host: "host", Path: "."}},
		{"sftp:bob@[::1]:/srv/repo", Config{User: "bob", Host: "::1", Path: "/srv/repo"}},
		{"sftp:host:/with:colon", Config{Host: "host", Path: "/with:colon"}},
		{"sftp://alice@example.com:2222/srv/repo", Config{User: "alice", Host: "example.com", Port: 2222, Path: "/srv/repo"}},
		{"sftp://example.com/srv/repo", Config{Host: "example.com", Path: "/srv/repo"}},
		{"sftp://example.com//srv/repo", Config{Host: "example.com", Path: "/srv/repo"}},
		{"sftp://example.com/~/repo", Config{Host: "example.com", Path: "repo"}},
		{"sftp://u@[2001:db8::1]:22/r", Config{User: "u", Host: "2001:db8::1", Port: 22, Path: "/r"}},
		{"sftp://example.com/with%20space", Config{Host: "example.com", Path: "/with space"}},
	}
	for _, tt := range tests {
		t.Run(tt.loc, func(t *testing.T) {
			got, err := ParseLocation(tt.loc)
			if err != nil {
				t.Fatalf("ParseLocation: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseLocation = %+v, want %+v", got, tt.want)
			}
			// The URL form reads back into the same config.
			again, err := ParseLocation(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseLocationErrors(t *testing.T) {
	for _, loc := range []string{
		"/srv/repo",
		"sftp:",
		"sftp:host",
		"sftp:host:",
		"sftp::/path",
		"sftp:@host:/path",
		"sftp:[::1/path",
		"sftp://",
		"sftp://host",
		"sftp://host/",
		"sftp://:22/path",
		"sftp://host:99999/path",
		"sftp://host:port/path",
		"sftp://u:secret@host/path",
		"sftp://host/path?x=1",
	} {
		t.Run(loc, func(t *testing.T) {
			cfg, err := ParseLocation(loc)
			if !errors.Is(err, ErrLocation) {
				t.Errorf("ParseLocation = %+v, %v; want an error wrapping ErrLocation", cfg, err)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	got, err := Config{Host: "h", Path: "/r", Connections: 1000}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if got.Port != 22 || got.HostName != "h" || got.User == "" ||
		got.Connections != MaxConnections || got.ConnectTimeout != DefaultConnectTimeout {
		t.Errorf("withDefaults = %+v", got)
	}
	wantKeys := []string{
		filepath.Join(home, ".ssh", "id_ed25519"),
		filepath.Join(home, ".ssh", "id_ecdsa"),
		filepath.Join(home, ".ssh", "id_rsa"),
	}
	if !reflect.DeepEqual(got.IdentityFiles, wantKeys) {
		t.Errorf("default IdentityFiles = %v, want %v", got.IdentityFiles, wantKeys)
	}
	if got, err := (Config{Host: "h", Path: "/r"}).withDefaults(); err != nil || got.Connections != DefaultConnections {
		t.Errorf("default Connections = %d (%v), want %d", got.Connections, err, DefaultConnections)
	}
}

func TestFromSSHConfig(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := `# imago test config
Host backup
    HostName backup.example.net
    Port 2222
    User archiver
    IdentityFile ~/.ssh/backup_key
    IdentityFile %d/keys/%r@%h
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts.backup
    StrictHostKeyChecking accept-new
    ConnectTimeout 7

Host *.internal
    User ops

Host *
    Port 2200
`
	if err := os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"alias", Config{Host: "backup", Path: "r"}, Config{
			Host: "backup", HostName: "backup.example.net", Port: 2222, User: "archiver", Path: "r",
			IdentityFiles: []string{
				filepath.Join(home, ".ssh", "backup_key"),
				filepath.Join(home, "keys", "archiver@backup.example.net"),
			},
			IdentitiesOnly:   true,
			KnownHostsFile:   filepath.Join(home, ".ssh", "known_hosts.backup"),
			AcceptNewHostKey: true,
			ConnectTimeout:   7 * time.Second,
		}},
		{"location wins", Config{Host: "backup", User: "me", Port: 22, Path: "r", IdentityFiles: []string{"/k"}}, Config{
			Host: "backup", HostName: "backup.example.net", Port: 22, User: "me", Path: "r",
			IdentityFiles:    []string{"/k"},
			IdentitiesOnly:   true,
			KnownHostsFile:   filepath.Join(home, ".ssh", "known_hosts.backup"),
			AcceptNewHostKey: true,
			ConnectTimeout:   7 * time.Second,
		}},
		{"pattern and catch-all", Config{Host: "db.internal", Path: "/r"}, Config{
			Host: "db.internal", Port: 2200, User: "ops", Path: "/r",
		}},
		{"no match but catch-all", Config{Host: "other", Path: "/r"}, Config{Host: "other", Port: 2200, Path: "/r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.fromSSHConfigFiles([]string{filepath.Join(home, ".ssh", "config"), filepath.Join(home, "missing")})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("FromSSHConfig =\n%+v, want\n%+v", got, tt.want)
			}
		})
	}

	t.Run("reads ~/.ssh/config", func(t *testing.T) {
		got, err := Config{Host: "backup", Path: "r"}.FromSSHConfig()
		if err != nil {
			t.Fatal(err)
		}
		if got.HostName != "backup.example.net" || got.User != "archiver" || got.Port != 2222 {
			t.Errorf("FromSSHConfig = %+v, want the values of the backup block", got)
		}
	})

	t.Run("bad port", func(t *testing.T) {
		bad := filepath.Join(home, "bad_config")
		if err := os.WriteFile(bad, []byte("Host x\n  Port many\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := (Config{Host: "x", Path: "r"}).fromSSHConfigFiles([]string{bad}); err == nil {
			t.Error("FromSSHConfig with Port many succeeded, want an error")
		}
	})
}
