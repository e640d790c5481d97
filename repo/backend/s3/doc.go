// Package s3 stores a repository in a bucket of an S3-compatible object
// store (AWS S3, MinIO, Ceph RGW, versitygw, …) through
// github.com/minio/minio-go/v7.
//
// # Locations
//
//	s3:https://host[:port]/bucket[/prefix]
//	s3:http://host[:port]/bucket[/prefix]
//	s3:host[:port]/bucket[/prefix]          (https)
//
// Files are stored under prefix + "/" + type + "/" + name; packs are sharded
// like the local backend (data/ab/abcd…) and the config file is
// prefix/config. Without a prefix the repository fills the bucket.
//
// # Credentials
//
// Credentials are looked up in this order, the first complete pair winning:
// Config.AccessKey and Config.SecretKey if a caller set them;
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; the
// profile named by the s3.profile option or AWS_PROFILE (else "default") in
// ~/.aws/credentials and ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE and
// AWS_CONFIG_FILE move them). Without any, requests are anonymous. Keys are
// never taken from the location or from -o options, where other users of
// the machine could read them in the process list.
//
// # Options
//
// ApplyOptions takes the -o key=value options whose key starts with "s3.":
//
//	s3.region=NAME          the bucket's region; default AWS_DEFAULT_REGION,
//	                        then AWS_REGION, then the profile's region in
//	                        ~/.aws/config, else asked of the server
//	s3.connections=N        concurrent requests, 1…64 (default 5)
//	s3.bucket-lookup=MODE   auto (default), path (https://host/bucket/key)
//	                        or dns (https://bucket.host/key)
//	s3.profile=NAME         the profile of the ~/.aws files to use
//
// # Errors
//
// A missing object or bucket gives an error wrapping backend.ErrNotExist;
// rejected credentials wrap ErrAuth, a refused permission ErrPermission, a
// server that cannot be reached ErrUnreachable. Server errors (5xx,
// throttling), timeouts and dropped connections wrap a
// *backend.TransientError, so the retry wrapper makes such calls again; the
// client library's own retries are switched off so that the two do not
// multiply. Every error is a single line.
//
// # Bounds
//
// At most Config.Connections requests run at a time; a Load holds its slot
// while its callback reads, so a callback must not wait for another call of
// the same backend. Uploads are single PUT requests streamed from the
// caller's io.ReaderAt (read twice: once for the Content-MD5 header, once
// to send), so no pack is buffered in memory. Connecting gives up after
// 10 s and waiting for response headers after 60 s, so an unreachable or
// stalled server is reported within about a minute.
package s3
