package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/imagobackup/imago/repo/backend"
)

// Backend is a repository in an S3 bucket. It is safe for concurrent use.
type Backend struct {
	cfg    Config // resolved: defaults and environment filled in
	client *minio.Client
	tr     *http.Transport
	// anonymous is set when no credentials were found: requests are
	// then unsigned, and a refusal means credentials are missing.
	anonymous bool

	// sem holds one token per request in flight; its capacity is
	// cfg.Connections.
	sem chan struct{}
}

var _ backend.Backend = (*Backend)(nil)

// Open connects to the bucket of cfg and checks that it exists and that the
// credentials may list it, so that a wrong location or key fails here, in
// one request. A missing bucket gives an error wrapping backend.ErrNotExist
// that names it; see the package documentation for the other errors.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := newBackend(cfg)
	if err != nil {
		return nil, err
	}
	if err := b.probe(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Create opens the bucket of cfg like Open, creating it first (in
// cfg.Region) if it does not exist. Objects already in the bucket are kept
// as they are: whether the prefix may hold a new repository (it must have
// no config) is decided by the caller.
func Create(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := newBackend(cfg)
	if err != nil {
		return nil, err
	}
	err = b.probe(ctx)
	if errors.Is(err, backend.ErrNotExist) {
		err = b.makeBucket(ctx)
		if err == nil {
			err = b.probe(ctx)
		}
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func newBackend(cfg Config) (*Backend, error) {
	cfg, err := cfg.resolved()
	if err != nil {
		return nil, err
	}
	creds, err := cfg.newCredentials()
	if err != nil {
		return nil, err
	}
	v, err := creds.Get()
	if err != nil {
		return nil, fmt.Errorf("s3: %w: %v", ErrAuth, oneLine(err.Error()))
	}
	// Transport timeouts bound every request that gets no answer; see
	// defaultDialTimeout. Idle connections are kept for reuse, as many as
	// may be in use at once.
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   cfg.dialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout:   cfg.dialTimeout,
		ResponseHeaderTimeout: cfg.headerTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          cfg.Connections,
		MaxIdleConnsPerHost:   cfg.Connections,
		IdleConnTimeout:       90 * time.Second,
		// Objects are stored as sent; never let the transport decode a
		// Content-Encoding the server might add.
		DisableCompression: true,
		ForceAttemptHTTP2:  true,
	}
	lookup := minio.BucketLookupAuto
	switch cfg.BucketLookup {
	case LookupPath:
		lookup = minio.BucketLookupPath
	case LookupDNS:
		lookup = minio.BucketLookupDNS
	}
	var rt http.RoundTripper = tr
	if cfg.wrapTransport != nil {
		rt = cfg.wrapTransport(tr)
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       cfg.Secure,
		Transport:    rt,
		Region:       cfg.Region,
		BucketLookup: lookup,
		// One attempt per call: retries belong to the retry wrapper,
		// which sees the TransientErrors this package returns. Retrying
		// here too would multiply the attempts and the time a dead
		// server takes to report.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %s: %v", cfg.Location(), oneLine(err.Error()))
	}
	return &Backend{
		cfg:       cfg,
		client:    client,
		tr:        tr,
		anonymous: v.SignerType.IsAnonymous(),
		sem:       make(chan struct{}, cfg.Connections),
	}, nil
}

// probe lists at most one object under the prefix: the cheapest request
// that fails with a distinct code for a missing bucket, an unknown key, a
// wrong secret and a refused permission (a HEAD request only gets a status).
// probeTimeout bounds the first request to a server, which tells whether
// it answers at all.
const probeTimeout = 15 * time.Second

func (b *Backend) probe(ctx context.Context) error {
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("s3: open %s: %w", b.Location(), err)
	}
	defer b.release()
	// A server that accepts connections but never answers must not hold
	// the command for the transport's 60 s header timeout: the first
	// request gets probeTimeout, like an SFTP connection's ConnectTimeout.
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	for obj := range b.client.ListObjectsIter(pctx, b.cfg.Bucket, minio.ListObjectsOptions{
		Prefix:  b.dir(""),
		MaxKeys: 1,
	}) {
		if obj.Err != nil {
			if ctx.Err() == nil && pctx.Err() != nil {
				return fmt.Errorf("s3: open %s: %w: no answer within %v", b.Location(), ErrUnreachable, probeTimeout)
			}
			err := classify(ctx, "s3: open "+b.Location(), b.cfg.Bucket, obj.Err)
			// Open is not retried, and "transient" says nothing useful
			// to a user: a server that cannot answer now is unreachable.
			var te *backend.TransientError
			if errors.As(err, &te) {
				if errors.Is(err, ErrUnreachable) {
					return fmt.Errorf("s3: open %s: %w", b.Location(), te.Err)
				}
				return fmt.Errorf("s3: open %s: %w: %v", b.Location(), ErrUnreachable, te.Err)
			}
			if b.anonymous && errors.Is(err, ErrPermission) {
				return fmt.Errorf("s3: open %s: %w: no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE", b.Location(), ErrAuth)
			}
			return err
		}
		break
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: open %s: %w", b.Location(), err)
	}
	return nil
}

// makeBucket creates the bucket. One created meanwhile by this account
// (BucketAlreadyOwnedByYou) is fine.
func (b *Backend) makeBucket(ctx context.Context) error {
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("s3: create bucket %q: %w", b.cfg.Bucket, err)
	}
	defer b.release()
	err := b.client.MakeBucket(ctx, b.cfg.Bucket, minio.MakeBucketOptions{Region: b.cfg.Region})
	if minio.ToErrorResponse(err).Code == "BucketAlreadyOwnedByYou" {
		return nil
	}
	if err != nil {
		return classify(ctx, fmt.Sprintf("s3: create bucket %q at %s", b.cfg.Bucket, b.cfg.Endpoint), b.cfg.Bucket, err)
	}
	return nil
}

// Location returns the location string, without credentials.
func (b *Backend) Location() string { return b.cfg.Location() }

// acquire takes a connection slot, or fails when ctx is done first.
func (b *Backend) acquire(ctx context.Context) error {
	select {
	case b.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release returns a slot taken by acquire.
func (b *Backend) release() { <-b.sem }

// dir returns the key prefix of the files of type t: "prefix/t/", or "t/"
// without a prefix; for t == "" the repository's own prefix ("prefix/" or
// "").
func (b *Backend) dir(t backend.FileType) string {
	p := b.cfg.Prefix
	if p != "" {
		p += "/"
	}
	if t == "" {
		return p
	}
	return p + string(t) + "/"
}

// key returns the object key of h, which must be valid.
func (b *Backend) key(h backend.Handle) string {
	switch h.Type {
	case backend.Config:
		return b.dir("") + string(backend.Config)
	case backend.Pack:
		return b.dir(backend.Pack) + h.Name[:2] + "/" + h.Name
	}
	return b.dir(h.Type) + h.Name
}

// Save uploads size bytes of rd in one PUT request of known length, which
// the server either stores whole or not at all. The request carries the
// data's MD5 (Content-MD5), so the server also refuses bytes damaged on the
// way. A source that fails or ends early fails the Save with the source's
// error, not marked transient.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("s3: save %v: negative size %d", h, size)
	}
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("s3: save %v: %w", h, err)
	}
	defer b.release()
	src := &source{ctx: ctx, rd: rd, size: size}
	_, err := b.client.PutObject(ctx, b.cfg.Bucket, b.key(h), io.NewSectionReader(src, 0, size), size, minio.PutObjectOptions{
		ContentType:      "application/octet-stream",
		DisableMultipart: true,
		SendContentMd5:   true,
	})
	if serr := src.failure(); serr != nil {
		return fmt.Errorf("s3: save %v: source: %w", h, serr)
	}
	if err != nil {
		return b.wrapErr(ctx, fmt.Sprintf("save %v", h), err)
	}
	return nil
}

// Load requests the range of h and calls fn with a reader of exactly that
// many bytes; a body that ends early gives io.ErrUnexpectedEOF and a
// dropped connection a *backend.TransientError, both from the reader.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("s3: load %v: negative length %d or offset %d", h, length, offset)
	}
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("s3: load %v: %w", h, err)
	}
	defer b.release()

	var opts minio.GetObjectOptions
	switch {
	case length > 0:
		err := opts.SetRange(offset, offset+int64(length)-1)
		if err != nil {
			return fmt.Errorf("s3: load %v: %w", h, err)
		}
	case offset > 0:
		err := opts.SetRange(offset, 0)
		if err != nil {
			return fmt.Errorf("s3: load %v: %w", h, err)
		}
	}
	body, info, _, err := minio.Core{Client: b.client}.GetObject(ctx, b.cfg.Bucket, b.key(h), opts)
	if minio.ToErrorResponse(err).Code == "InvalidRange" {
		// The range starts at or after the end. Only an empty read at
		// the very end is valid (length 0: up to the end).
		return b.loadAtEnd(ctx, h, length, offset, fn)
	}
	if err != nil {
		return b.wrapErr(ctx, fmt.Sprintf("load %v", h), err)
	}
	defer body.Close() // Read-only: closing cannot lose data.
	if length > 0 && info.Size != int64(length) {
		return fmt.Errorf("s3: load %v: range %d+%d beyond the end of the object (server sent %d bytes)", h, offset, length, info.Size)
	}
	return fn(&exactReader{ctx: ctx, h: h, r: body, left: info.Size})
}

// loadAtEnd handles a range the server refused: it calls fn with an empty
// reader if the request was for the zero bytes after the end (offset equals
// the size, length 0), else it reports the range.
func (b *Backend) loadAtEnd(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	info, err := b.client.StatObject(ctx, b.cfg.Bucket, b.key(h), minio.StatObjectOptions{})
	if err != nil {
		return b.wrapErr(ctx, fmt.Sprintf("load %v", h), err)
	}
	if length == 0 && offset == info.Size {
		return fn(strings.NewReader(""))
	}
	return fmt.Errorf("s3: load %v: range %d+%d beyond the end of the %d-byte object", h, offset, length, info.Size)
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	if err := h.Validate(); err != nil {
		return backend.FileInfo{}, err
	}
	if err := b.acquire(ctx); err != nil {
		return backend.FileInfo{}, fmt.Errorf("s3: stat %v: %w", h, err)
	}
	defer b.release()
	info, err := b.client.StatObject(ctx, b.cfg.Bucket, b.key(h), minio.StatObjectOptions{})
	if err != nil {
		return backend.FileInfo{}, b.wrapErr(ctx, fmt.Sprintf("stat %v", h), err)
	}
	return backend.FileInfo{Name: h.Name, Size: info.Size}, nil
}

// List calls fn for every object of type t. A connection slot is held only
// while the next page of the listing is fetched, not while fn runs, so fn
// may call the backend. Keys that cannot be a file of t (sub-folders,
// names starting with '.', packs outside their shard) are skipped.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !slices.Contains(backend.FileTypes, t) {
		return fmt.Errorf("s3: list %q: %w: unknown file type", t, backend.ErrInvalidHandle)
	}
	if t == backend.Config {
		fi, err := b.Stat(ctx, backend.Handle{Type: t})
		if errors.Is(err, backend.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(fi)
	}

	dir := b.dir(t)
	// The listing stops when List returns; cancelling ends the
	// iterator's pending request, if any.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next, stop := iter.Pull(b.client.ListObjectsIter(ctx, b.cfg.Bucket, minio.ListObjectsOptions{
		Prefix:    dir,
		Recursive: t == backend.Pack,
	}))
	defer stop()
	for {
		if err := b.acquire(ctx); err != nil {
			return fmt.Errorf("s3: list %s: %w", t, err)
		}
		obj, ok := next()
		b.release()
		if !ok {
			break
		}
		if obj.Err != nil {
			return b.wrapErr(ctx, fmt.Sprintf("list %s", t), obj.Err)
		}
		name, ok := fileName(t, strings.TrimPrefix(obj.Key, dir))
		if !ok {
			continue
		}
		if err := fn(backend.FileInfo{Name: name, Size: obj.Size}); err != nil {
			return err
		}
	}
	// The iterator ends silently when its context is cancelled.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: list %s: %w", t, err)
	}
	return nil
}

// fileName returns the name of the file of type t stored under rel, the
// key relative to the type's folder, and whether rel names such a file.
func fileName(t backend.FileType, rel string) (string, bool) {
	name := rel
	if t == backend.Pack {
		shard, rest, ok := strings.Cut(rel, "/")
		if !ok || len(shard) != 2 || !strings.HasPrefix(rest, shard) {
			return "", false
		}
		name = rest
	}
	if (backend.Handle{Type: t, Name: name}).Validate() != nil {
		return "", false
	}
	return name, true
}

// Remove deletes h. S3 deletes a missing key without complaint, so the
// object is looked up first to report ErrNotExist; an object removed by
// someone else between the two requests is reported as removed.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if err := b.acquire(ctx); err != nil {
		return fmt.Errorf("s3: remove %v: %w", h, err)
	}
	defer b.release()
	op := fmt.Sprintf("remove %v", h)
	if _, err := b.client.StatObject(ctx, b.cfg.Bucket, b.key(h), minio.StatObjectOptions{}); err != nil {
		return b.wrapErr(ctx, op, err)
	}
	if err := b.client.RemoveObject(ctx, b.cfg.Bucket, b.key(h), minio.RemoveObjectOptions{}); err != nil {
		return b.wrapErr(ctx, op, err)
	}
	return nil
}

// Close closes idle connections. Calls still running finish.
func (b *Backend) Close() error {
	b.tr.CloseIdleConnections()
	return nil
}
