package s3

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	tests := []struct {
		loc  string
		want Config // only the location fields are compared
	}{
		{"s3:https://s3.example.com/bucket", Config{Endpoint: "s3.example.com", Secure: true, Bucket: "bucket"}},
		{"s3:https://s3.example.com/bucket/", Config{Endpoint: "s3.example.com", Secure: true, Bucket: "bucket"}},
		{"s3:https://s3.example.com:9000/bucket/some/prefix", Config{Endpoint: "s3.example.com:9000", Secure: true, Bucket: "bucket", Prefix: "some/prefix"}},
		{"s3:http://127.0.0.1:7070/b-1/p/", Config{Endpoint: "127.0.0.1:7070", Bucket: "b-1", Prefix: "p"}},
		{"s3:http://[::1]:7070/bucket", Config{Endpoint: "[::1]:7070", Bucket: "bucket"}},
		{"s3:s3.amazonaws.com/bucket/prefix", Config{Endpoint: "s3.amazonaws.com", Secure: true, Bucket: "bucket", Prefix: "prefix"}},
		{"s3:minio.lan:9000/bucket", Config{Endpoint: "minio.lan:9000", Secure: true, Bucket: "bucket"}},
	}
	for _, tt := range tests {
		t.Run(tt.loc, func(t *testing.T) {
			got, err := ParseLocation(tt.loc)
			if err != nil {
				t.Fatalf("ParseLocation: %v", err)
			}
			if got.Endpoint != tt.want.Endpoint || got.Secure != tt.want.Secure || got.Bucket != tt.want.Bucket || got.Prefix != tt.want.Prefix {
				t.Errorf("ParseLocation = endpoint %q secure %v bucket %q prefix %q, want %q %v %q %q",
					got.Endpoint, got.Secure, got.Bucket, got.Prefix,
					tt.want.Endpoint, tt.want.Secure, tt.want.Bucket, tt.want.Prefix)
			}
			if got.Connections != DefaultConnections || got.BucketLookup != LookupAuto || got.Region != "" {
				t.Errorf("ParseLocation defaults = connections %d lookup %q region %q, want %d %q \"\"",
					got.Connections, got.BucketLookup, got.Region, DefaultConnections, LookupAuto)
			}
			// Location gives back an equivalent location, which
			// parses to the same Config.
			again, err := ParseLocation(got.Location())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("ParseLocation(Location() = %q) = %+v, %v; want %+v", got.Location(), again, err, got)
			}
		})
	}
}

func TestParseLocationErrors(t *testing.T) {
	tests := []struct {
		loc, mentions string
	}{
		{"sftp:host/path", `"s3:"`},
		{"s3:", "no host"},
		{"s3:https:///bucket", "no host"},
		{"s3:https://host", "no bucket"},
		{"s3:https://host/", "no bucket"},
		{"s3:host", "no bucket"},
		{"s3:ftp://host/bucket", "http or https"},
		{"s3:https://key:secret@host/bucket", "credentials"},
		{"s3:https://host/bucket?x=1", "query"},
		{"s3:https://host/bad..bucket", "bad..bucket"},
		{"s3:https://host/-bucket", "-bucket"},
		{"s3:https://host/ab", `"ab"`},
		{"s3:https://host/bucket/a//b", "prefix"},
		{"s3:https://host/bucket/a/../b", "prefix"},
		{"s3:https://host/bucket/./b", "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.loc, func(t *testing.T) {
			cfg, err := ParseLocation(tt.loc)
			if err == nil {
				t.Fatalf("ParseLocation = %+v, want an error", cfg)
			}
			if !strings.Contains(err.Error(), tt.mentions) || strings.Contains(err.Error(), "\n") {
				t.Errorf("ParseLocation = %q, want one line mentioning %s", err, tt.mentions)
			}
		})
	}
}

func TestApplyOptions(t *testing.T) {
	tests := []struct {
		name     string
		opts     map[string]string
		check    func(Config) bool
		mentions string // non-empty: an error mentioning this is expected
	}{
		{"region", map[string]string{"s3.region": "eu-central-1"},
			func(c Config) bool { return c.Region == "eu-central-1" }, ""},
		{"connections", map[string]string{"s3.connections": "12"},
			func(c Config) bool { return c.Connections == 12 }, ""},
		{"bucket lookup path", map[string]string{"s3.bucket-lookup": "path"},
			func(c Config) bool { return c.BucketLookup == LookupPath }, ""},
		{"bucket lookup dns", map[string]string{"s3.bucket-lookup": "dns"},
			func(c Config) bool { return c.BucketLookup == LookupDNS }, ""},
		{"profile", map[string]string{"s3.profile": "backup"},
			func(c Config) bool { return c.Profile == "backup" }, ""},
		{"other backends' options are ignored", map[string]string{"sftp.command": "ssh -p 2222", "s3.region": "x"},
			func(c Config) bool { return c.Region == "x" && c.Connections == DefaultConnections }, ""},
		{"no connections", map[string]string{"s3.connections": "0"}, nil, "s3.connections"},
		{"too many connections", map[string]string{"s3.connections": "65"}, nil, "1 to 64"},
		{"connections not a number", map[string]string{"s3.connections": "many"}, nil, "s3.connections"},
		{"unknown lookup", map[string]string{"s3.bucket-lookup": "virtual"}, nil, "s3.bucket-lookup"},
		{"unknown key", map[string]string{"s3.regoin": "x"}, nil, `"s3.regoin"`},
		{"secrets are not options", map[string]string{"s3.secret-key": "x"}, nil, "unknown option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseLocation("s3:https://host/bucket")
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.ApplyOptions(tt.opts)
			if tt.mentions != "" {
				if err == nil || !strings.Contains(err.Error(), tt.mentions) {
					t.Errorf("ApplyOptions(%v) = %v, want an error mentioning %s", tt.opts, err, tt.mentions)
				}
				return
			}
			if err != nil {
				t.Fatalf("ApplyOptions(%v): %v", tt.opts, err)
			}
			if !tt.check(cfg) {
				t.Errorf("ApplyOptions(%v) gave %+v", tt.opts, cfg)
			}
		})
	}
}

func TestResolvedDefaults(t *testing.T) {
	clearAWSEnv(t)
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_REGION", "ap-south-1")
	cfg, err := Config{Endpoint: "host", Bucket: "bucket", Prefix: "/p/"}.resolved()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Connections != DefaultConnections || cfg.BucketLookup != LookupAuto || cfg.Prefix != "p" || cfg.Region != "ap-south-1" {
		t.Errorf("resolved = %+v, want default connections and lookup, prefix \"p\", region from AWS_REGION", cfg)
	}
	t.Setenv("AWS_DEFAULT_REGION", "eu-west-3")
	if cfg, _ := (Config{Endpoint: "host", Bucket: "bucket"}).resolved(); cfg.Region != "eu-west-3" {
		t.Errorf("resolved region = %q, want AWS_DEFAULT_REGION's eu-west-3", cfg.Region)
	}
	if cfg, _ := (Config{Endpoint: "host", Bucket: "bucket", Region: "us-west-1"}).resolved(); cfg.Region != "us-west-1" {
		t.Errorf("resolved region = %q, want the configured us-west-1", cfg.Region)
	}
	// Without a region in the environment, the profile's region in
	// ~/.aws/config; the option wins over AWS_PROFILE.
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_REGION", "")
	dir := filepath.Join(os.Getenv("HOME"), ".aws")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := "# comment\n[default]\nregion = eu-north-1\n\n[profile backup]\noutput=json\nregion=sa-east-1\n"
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ env, option, want string }{
		{"", "", "eu-north-1"},
		{"backup", "", "sa-east-1"},
		{"default", "backup", "sa-east-1"},
		{"nosuch", "", ""},
	} {
		t.Setenv("AWS_PROFILE", tc.env)
		cfg, err := Config{Endpoint: "host", Bucket: "bucket", Profile: tc.option}.resolved()
		if err != nil || cfg.Region != tc.want {
			t.Errorf("AWS_PROFILE=%q, profile option %q: resolved region = %q, %v; want %q", tc.env, tc.option, cfg.Region, err, tc.want)
		}
	}

	for _, bad := range []Config{
		{Bucket: "bucket"},
		{Endpoint: "host"},
		{Endpoint: "host", Bucket: "bucket", Connections: MaxConnections + 1},
		{Endpoint: "host", Bucket: "bucket", BucketLookup: "virtual"},
	} {
		if _, err := bad.resolved(); err == nil {
			t.Errorf("resolved(%+v) succeeded, want an error", bad)
		}
	}
}
