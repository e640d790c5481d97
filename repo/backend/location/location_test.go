package location_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/location"
	"github.com/imagobackup/imago/repo/backend/s3/s3test"
	"github.com/imagobackup/imago/repo/backend/sftp/sftptest"
)

func TestParse(t *testing.T) {
	tests := []struct {
		loc    string
		scheme location.Scheme
		path   string
	}{
		{"/srv/repo", location.Local, "/srv/repo"},
		{"repo", location.Local, "repo"},
		{"./a:b", location.Local, "./a:b"},
		{"local:/srv/repo", location.Local, "/srv/repo"},
		{"local:rel/x:y", location.Local, "rel/x:y"},
		{`C:\repo`, location.Local, `C:\repo`},
		{"sftp:host:/srv/repo", location.SFTP, ""},
		{"sftp://u@host:2222/srv", location.SFTP, ""},
		{"s3:https://host/bucket/prefix", location.S3, ""},
		{"s3:host/bucket", location.S3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.loc, func(t *testing.T) {
			scheme, path, err := location.Parse(tt.loc)
			if err != nil {
				t.Fatal(err)
			}
			if scheme != tt.scheme || path != tt.path {
				t.Errorf("Parse(%q) = %q, %q; want %q, %q", tt.loc, scheme, path, tt.scheme, tt.path)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, loc := range []string{"", "sfpt:host:/srv", "b2:bucket/x", "rest:http://h/", "local:"} {
		t.Run(loc, func(t *testing.T) {
			if _, _, err := location.Parse(loc); err == nil {
				t.Fatalf("Parse(%q) succeeded", loc)
			}
			_, err := location.Open(context.Background(), loc, nil, true)
			if err == nil {
				t.Fatalf("Open(%q) succeeded", loc)
			}
			if loc == "sfpt:host:/srv" && !errors.Is(err, location.ErrUnknownScheme) {
				t.Errorf("error %v does not wrap ErrUnknownScheme", err)
			}
		})
	}
	// A typo must not create a local folder named after it.
	dir := t.TempDir()
	t.Chdir(dir)
	_, _ = location.Open(context.Background(), "sfpt:host:/srv", nil, true)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a folder was made for an unknown scheme: %v", entries)
	}
}

func TestOpenLocal(t *testing.T) {
	ctx := context.Background()
	for _, prefix := range []string{"", "local:"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			if _, err := location.Open(ctx, prefix+dir, nil, false); !errors.Is(err, backend.ErrNotExist) {
				t.Fatalf("open missing repository: %v, want ErrNotExist", err)
			}
			be, err := location.Open(ctx, prefix+dir, nil, true)
			if err != nil {
				t.Fatal(err)
			}
			h := backend.Handle{Type: backend.Config}
			if err := be.Save(ctx, h, strings.NewReader("cfg"), 3); err != nil {
				t.Fatal(err)
			}
			be.Close()
			if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
				t.Fatalf("config not stored in the folder: %v", err)
			}
			be, err = location.Open(ctx, prefix+dir, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			defer be.Close()
			b, err := backend.LoadAll(ctx, be, h, nil)
			if err != nil || string(b) != "cfg" {
				t.Fatalf("load = %q, %v", b, err)
			}
		})
	}
}

func TestOptionErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tests := []struct {
		name string
		loc  string
		opts map[string]string
		want string
	}{
		{"no backend prefix", dir, map[string]string{"connections": "3"}, `unknown option "connections"`},
		{"unknown sftp key", "sftp:h:/r", map[string]string{"sftp.conections": "3"}, `unknown option "sftp.conections"`},
		{"bad sftp number", "sftp:h:/r", map[string]string{"sftp.connections": "0"}, "sftp.connections"},
		{"bad sftp timeout", "sftp:h:/r", map[string]string{"sftp.connect-timeout": "soon"}, "sftp.connect-timeout"},
		{"unknown s3 key", "s3:h/bucket", map[string]string{"s3.regoin": "x"}, `unknown option "s3.regoin"`},
		{"bad s3 number", "s3:h/bucket", map[string]string{"s3.connections": "1000"}, "s3.connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := location.Open(ctx, tt.loc, tt.opts, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestOpenS3(t *testing.T) {
	srv := s3test.StartServer(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	ctx := context.Background()
	opts := map[string]string{"s3.region": "us-east-1", "s3.bucket-lookup": "path", "s3.connections": "2", "sftp.connections": "3"}

	missing := "s3:" + srv.URL + "/imago-no-such-bucket/repo"
	if _, err := location.Open(ctx, missing, opts, false); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("open missing bucket: %v, want ErrNotExist", err)
	}
	loc := "s3:" + srv.URL + "/" + srv.Bucket + "/repo"
	be, err := location.Open(ctx, loc, opts, true)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := backend.Handle{Type: backend.Snapshot, Name: strings.Repeat("ab", 32)}
	if err := be.Save(ctx, h, strings.NewReader("snap"), 4); err != nil {
		t.Fatal(err)
	}
	b, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil || string(b) != "snap" {
		t.Fatalf("load = %q, %v", b, err)
	}
}

func TestOpenSFTP(t *testing.T) {
	srv := sftptest.StartServer(t)
	ctx := context.Background()
	opts := map[string]string{
		"sftp.identity":        srv.KeyFile,
		"sftp.identities-only": "true",
		"sftp.known-hosts":     srv.KnownHostsFile,
		"sftp.ssh-config":      "false",
		"sftp.connections":     "2",
		"s3.region":            "ignored-here",
	}
	dir := filepath.Join(t.TempDir(), "repo")
	loc := fmt.Sprintf("sftp://%s@%s/%s", srv.User, srv.Addr(), strings.TrimPrefix(dir, "/"))
	if _, err := location.Open(ctx, loc, opts, false); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("open missing folder: %v, want ErrNotExist", err)
	}
	be, err := location.Open(ctx, loc, opts, true)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := backend.Handle{Type: backend.Index, Name: strings.Repeat("cd", 32)}
	if err := be.Save(ctx, h, strings.NewReader("index"), 5); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "index", h.Name)); err != nil {
		t.Fatalf("file not stored in the server's folder: %v", err)
	}
}
