package s3

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Connection limits. Each connection in use costs little memory: uploads
// stream from the caller's ReaderAt through 64 KiB signing buffers and
// downloads stream into the caller's callback, so 64 connections cost a few
// MiB; more would only queue at the server.
const (
	DefaultConnections = 5
	MaxConnections     = 64
)

// Bucket lookup modes: how a bucket is named in a request's URL.
const (
	LookupAuto = "auto" // virtual-host style where the endpoint is known to support it (AWS, …), else path style
	LookupPath = "path" // https://host/bucket/key
	LookupDNS  = "dns"  // https://bucket.host/key
)

// Timeouts of every connection. Ten seconds is ample to open a TCP
// connection or a TLS session to any reachable server; a minute for the
// response headers covers a server that finishes writing a large object
// before it answers, and still reports a hung server within about a minute.
const (
	defaultDialTimeout   = 10 * time.Second
	defaultHeaderTimeout = 60 * time.Second
)

// Config describes where a repository is stored and how to reach it.
// ParseLocation fills the location fields and the defaults; ApplyOptions
// the options; Open resolves what is left empty from the environment.
type Config struct {
	Endpoint string // host or host:port, without scheme
	Secure   bool   // https rather than http
	Bucket   string
	Prefix   string // the folder inside the bucket, without leading or trailing '/'; may be empty

	// Region is the bucket's region; empty means AWS_DEFAULT_REGION, then
	// AWS_REGION, then the profile's region in ~/.aws/config, else the
	// server is asked.
	Region string

	// AccessKey, SecretKey and SessionToken are static credentials; when
	// empty the environment and the ~/.aws files are used (see the
	// package documentation).
	AccessKey    string
	SecretKey    string
	SessionToken string
	// Profile names the profile of the ~/.aws files; empty means
	// AWS_PROFILE, else "default".
	Profile string

	// BucketLookup is LookupAuto, LookupPath or LookupDNS; empty means
	// LookupAuto.
	BucketLookup string

	// Connections bounds the concurrent requests, 1…MaxConnections; zero
	// means DefaultConnections.
	Connections int

	// dialTimeout and headerTimeout replace the default timeouts when
	// set; tests shorten them.
	dialTimeout   time.Duration
	headerTimeout time.Duration
	// wrapTransport, if set, wraps the HTTP transport; tests inject
	// faults with it.
	wrapTransport func(http.RoundTripper) http.RoundTripper
}

// ParseLocation parses "s3:https://host[:port]/bucket[/prefix]",
// "s3:http://…" or "s3:host[:port]/bucket[/prefix]" (https) into a Config
// with the default options.
func ParseLocation(loc string) (Config, error) {
	rest, ok := strings.CutPrefix(loc, "s3:")
	if !ok {
		return Config{}, fmt.Errorf("s3: location %q does not start with \"s3:\"", loc)
	}
	cfg := Config{Secure: true, BucketLookup: LookupAuto, Connections: DefaultConnections}
	var path string
	switch {
	case strings.HasPrefix(rest, "https://"), strings.HasPrefix(rest, "http://"):
		u, err := url.Parse(rest)
		if err != nil {
			return Config{}, fmt.Errorf("s3: location %q: %w", loc, err)
		}
		if u.User != nil {
			return Config{}, fmt.Errorf("s3: location %q: credentials do not belong in the location: use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", loc)
		}
		if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return Config{}, fmt.Errorf("s3: location %q: unexpected query or fragment", loc)
		}
		cfg.Secure = u.Scheme == "https"
		cfg.Endpoint = u.Host
		path = u.Path
	case strings.Contains(rest, "://"):
		return Config{}, fmt.Errorf("s3: location %q: scheme must be http or https", loc)
	default:
		cfg.Endpoint, path, _ = strings.Cut(rest, "/")
		path = "/" + path
	}
	if cfg.Endpoint == "" {
		return Config{}, fmt.Errorf("s3: location %q names no host", loc)
	}
	if strings.ContainsAny(cfg.Endpoint, "@?#") {
		return Config{}, fmt.Errorf("s3: location %q: invalid host %q", loc, cfg.Endpoint)
	}
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if bucket == "" {
		return Config{}, fmt.Errorf("s3: location %q names no bucket", loc)
	}
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return Config{}, fmt.Errorf("s3: location %q: bucket %q: %v", loc, bucket, err)
	}
	cfg.Bucket = bucket
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		for seg := range strings.SplitSeq(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return Config{}, fmt.Errorf("s3: location %q: prefix %q has an empty, \".\" or \"..\" element", loc, prefix)
			}
		}
	}
	cfg.Prefix = prefix
	return cfg, nil
}

// optionKeys lists the options ApplyOptions understands.
var optionKeys = []string{"s3.bucket-lookup", "s3.connections", "s3.profile", "s3.region"}

// ApplyOptions sets the options whose key starts with "s3." (see the
// package documentation); keys of other backends are ignored, so the CLI
// may pass every -o option to every backend. An unknown "s3." key or an
// invalid value is an error naming it.
func (c *Config) ApplyOptions(opts map[string]string) error {
	// Sorted keys make the first error reported independent of map order.
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := opts[k]
		switch k {
		case "s3.region":
			c.Region = v
		case "s3.profile":
			c.Profile = v
		case "s3.connections":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxConnections {
				return fmt.Errorf("s3: option %s=%q: want a number from 1 to %d", k, v, MaxConnections)
			}
			c.Connections = n
		case "s3.bucket-lookup":
			switch v {
			case LookupAuto, LookupPath, LookupDNS:
				c.BucketLookup = v
			default:
				return fmt.Errorf("s3: option %s=%q: want %s, %s or %s", k, v, LookupAuto, LookupPath, LookupDNS)
			}
		default:
			if strings.HasPrefix(k, "s3.") {
				return fmt.Errorf("s3: unknown option %q (known: %s)", k, strings.Join(optionKeys, ", "))
			}
		}
	}
	return nil
}

// Location returns the location string of c, without credentials.
func (c *Config) Location() string {
	scheme := "https"
	if !c.Secure {
		scheme = "http"
	}
	loc := "s3:" + scheme + "://" + c.Endpoint + "/" + c.Bucket
	if c.Prefix != "" {
		loc += "/" + c.Prefix
	}
	return loc
}

// resolved returns a copy of c with defaults and environment filled in, or
// an error for invalid fields of a Config built by hand.
func (c Config) resolved() (Config, error) {
	if c.Endpoint == "" || c.Bucket == "" {
		return Config{}, fmt.Errorf("s3: config needs an endpoint and a bucket")
	}
	if err := s3utils.CheckValidBucketName(c.Bucket); err != nil {
		return Config{}, fmt.Errorf("s3: bucket %q: %v", c.Bucket, err)
	}
	c.Prefix = strings.Trim(c.Prefix, "/")
	switch {
	case c.Connections == 0:
		c.Connections = DefaultConnections
	case c.Connections < 0 || c.Connections > MaxConnections:
		return Config{}, fmt.Errorf("s3: %d connections: want 1 to %d", c.Connections, MaxConnections)
	}
	switch c.BucketLookup {
	case "":
		c.BucketLookup = LookupAuto
	case LookupAuto, LookupPath, LookupDNS:
	default:
		return Config{}, fmt.Errorf("s3: bucket lookup %q: want %s, %s or %s", c.BucketLookup, LookupAuto, LookupPath, LookupDNS)
	}
	if c.Region == "" {
		c.Region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if c.Region == "" {
		c.Region = os.Getenv("AWS_REGION")
	}
	if c.Region == "" {
		c.Region = profileRegion(c.profileName())
	}
	if c.dialTimeout <= 0 {
		c.dialTimeout = defaultDialTimeout
	}
	if c.headerTimeout <= 0 {
		c.headerTimeout = defaultHeaderTimeout
	}
	return c, nil
}
