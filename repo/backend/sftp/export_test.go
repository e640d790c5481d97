package sftp

import "time"

// SetKeepalive sets how often the connections of backends opened with c
// probe the server.
func SetKeepalive(c *Config, every time.Duration) { c.keepalive = every }
