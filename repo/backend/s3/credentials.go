package s3

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// newCredentials returns the credentials of c: its static keys if set,
// else the AWS environment variables, else the profile of the ~/.aws files.
// A half-set key pair, or a profile named explicitly that yields no keys,
// is an error wrapping ErrAuth rather than a silent fall-back to anonymous
// requests that the server would refuse with a less helpful message.
func (c *Config) newCredentials() (*credentials.Credentials, error) {
	if c.AccessKey != "" || c.SecretKey != "" {
		if c.AccessKey == "" || c.SecretKey == "" {
			return nil, fmt.Errorf("s3: %w: an access key needs its secret key and the other way round", ErrAuth)
		}
		return credentials.NewStaticV4(c.AccessKey, c.SecretKey, c.SessionToken), nil
	}
	id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if (id == "") != (secret == "") {
		return nil, fmt.Errorf("s3: %w: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither", ErrAuth)
	}
	file := &credentials.FileAWSCredentials{Profile: c.Profile}
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, file})
	v, err := creds.Get()
	if err != nil {
		return nil, fmt.Errorf("s3: %w: %v", ErrAuth, oneLine(err.Error()))
	}
	profile := c.Profile
	if profile == "" {
		profile = os.Getenv("AWS_PROFILE")
	}
	if v.SignerType.IsAnonymous() && profile != "" {
		// The chain hides why the profile gave nothing; ask it alone.
		if _, err := file.Retrieve(); err != nil {
			return nil, fmt.Errorf("s3: %w: profile %q: %v", ErrAuth, profile, oneLine(err.Error()))
		}
		return nil, fmt.Errorf("s3: %w: profile %q has no aws_access_key_id and aws_secret_access_key", ErrAuth, profile)
	}
	return creds, nil
}

// profileName returns the profile of the ~/.aws files that c uses.
func (c *Config) profileName() string {
	if c.Profile != "" {
		return c.Profile
	}
	if p := os.Getenv("AWS_PROFILE"); p != "" {
		return p
	}
	return "default"
}

// profileRegion returns the region setting of profile in the AWS config
// file (AWS_CONFIG_FILE, else ~/.aws/config), or "" if there is none. The
// file is INI: "[default]" or "[profile NAME]" sections of "key = value"
// lines; '#' and ';' start comments.
func profileRegion(profile string) string {
	path := os.Getenv("AWS_CONFIG_FILE")
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		path = filepath.Join(home, ".aws", "config")
	}
	f, err := os.Open(path)
	if err != nil {
		return "" // No config file: no region from it.
	}
	defer f.Close() // Read-only: closing cannot lose data.
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if name, ok := strings.CutPrefix(line, "["); ok {
			name = strings.TrimSpace(strings.TrimSuffix(name, "]"))
			in = name == "profile "+profile || (profile == "default" && name == "default")
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if in && ok && strings.TrimSpace(key) == "region" {
			return strings.TrimSpace(value)
		}
	}
	return ""
}
