package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/minio/minio-go/v7"

	"github.com/imagobackup/imago/repo/backend"
)

// Sentinels for the failures a user must fix before trying again; the CLI
// maps each to its own exit code.
var (
	// ErrAuth is wrapped when the server rejects the credentials: an
	// unknown access key, a wrong secret key, an expired session token,
	// or no usable credentials at all.
	ErrAuth = errors.New("S3 credentials rejected")
	// ErrPermission is wrapped when the credentials are valid but may not
	// do what was asked (AccessDenied).
	ErrPermission = errors.New("S3 permission denied")
	// ErrUnreachable is wrapped when no connection to the server can be
	// made: the name does not resolve, the port is closed, the connection
	// attempt times out, or the TLS handshake fails.
	ErrUnreachable = errors.New("S3 server unreachable")
)

// S3 error codes that name rejected credentials. Codes that minio-go does
// not export as constants are spelled out as AWS documents them.
var authCodes = map[string]bool{
	minio.InvalidAccessKeyID:            true, // "InvalidAccessKeyId"
	"SignatureDoesNotMatch":             true,
	"ExpiredToken":                      true,
	"InvalidToken":                      true,
	"TokenRefreshRequired":              true,
	"InvalidSecurity":                   true,
	"MissingSecurityHeader":             true,
	"AuthorizationQueryParametersError": true,
}

// S3 error codes that refuse an operation to valid credentials.
var permissionCodes = map[string]bool{
	minio.AccessDenied:   true,
	"AllAccessDisabled":  true,
	"AccountProblem":     true,
	"InvalidObjectState": true, // an object in an archive storage class
}

// S3 error codes worth trying again, whatever their HTTP status.
// RequestTimeTooSkewed is not among them: the clock must be fixed first.
var transientCodes = map[string]bool{
	"RequestTimeout":             true,
	"Throttling":                 true,
	"ThrottlingException":        true,
	"RequestLimitExceeded":       true,
	"RequestThrottled":           true,
	"SlowDown":                   true,
	"SlowDownRead":               true,
	"SlowDownWrite":              true,
	"InternalError":              true,
	"ServiceUnavailable":         true,
	"OperationAborted":           true,
	"XMinioServerNotInitialized": true,
}

// wrapErr turns an error of minio-go (or of the transport under it) into a
// one-line error of this package: "s3: <op>: <cause>", wrapping
// backend.ErrNotExist, ErrAuth, ErrPermission or ErrUnreachable where one
// applies, and a *backend.TransientError when the same call may succeed
// later. An error caused by the end of ctx becomes ctx's error; the
// transport's own timeouts (which may also say "deadline exceeded") are
// transient.
func (b *Backend) wrapErr(ctx context.Context, op string, err error) error {
	return classify(ctx, "s3: "+op, b.cfg.Bucket, err)
}

// classify is wrapErr for callers without a Backend (Open, Create).
func classify(ctx context.Context, what, bucket string, err error) error {
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
		return fmt.Errorf("%s: %w", what, cerr)
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		return classifyResponse(what, bucket, resp)
	}
	if errors.Is(err, ErrAuth) || errors.Is(err, ErrPermission) || errors.Is(err, ErrUnreachable) || errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := oneLine(err.Error())
	var urlErr *url.Error
	if errors.As(err, &urlErr) && urlErr.Err != nil {
		// The request's URL is long and says nothing the location
		// does not.
		msg = oneLine(urlErr.Err.Error())
	}

	var x509Err x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	if errors.As(err, &x509Err) || errors.As(err, &hostErr) || errors.As(err, &certErr) || errors.As(err, &recErr) ||
		strings.Contains(msg, "server gave HTTP response to HTTPS client") {
		// A certificate problem or a wrong scheme does not go away
		// when asked again.
		return fmt.Errorf("%s: %w: TLS: %s", what, ErrUnreachable, msg)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return fmt.Errorf("%s: %w: host %q not found", what, ErrUnreachable, dnsErr.Name)
		}
		return fmt.Errorf("%s: %w", what, &backend.TransientError{Err: fmt.Errorf("%w: %s", ErrUnreachable, msg)})
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		cause := msg
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			cause = fmt.Sprintf("connection to %v refused", opErr.Addr)
		case opErr.Timeout():
			cause = fmt.Sprintf("connection to %v timed out", opErr.Addr)
		}
		return fmt.Errorf("%s: %w", what, &backend.TransientError{Err: fmt.Errorf("%w: %s", ErrUnreachable, cause)})
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// Not wrapping err: it may wrap context.DeadlineExceeded, which
		// the retry wrapper takes for the end of the caller's context.
		return fmt.Errorf("%s: %w", what, &backend.TransientError{Err: errors.New("server did not answer in time: " + msg)})
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) || errors.As(err, &opErr) ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "server closed") ||
		strings.Contains(msg, "broken pipe") {
		return fmt.Errorf("%s: %w", what, &backend.TransientError{Err: &lineError{msg, err}})
	}
	return fmt.Errorf("%s: %w", what, &lineError{msg, err})
}

// classifyResponse maps an error answer of the server.
func classifyResponse(what, bucket string, resp minio.ErrorResponse) error {
	detail := resp.Code
	if resp.Message != "" && resp.Message != resp.Code {
		detail += ": " + resp.Message
	}
	detail = oneLine(detail)
	switch {
	case resp.Code == minio.NoSuchKey:
		return fmt.Errorf("%s: %w", what, backend.ErrNotExist)
	case resp.Code == minio.NoSuchBucket:
		b := resp.BucketName
		if b == "" {
			b = bucket
		}
		return fmt.Errorf("%s: %w", what, noBucketError{bucket: b})
	case authCodes[resp.Code]:
		return fmt.Errorf("%s: %w (%s)", what, ErrAuth, detail)
	case permissionCodes[resp.Code]:
		return fmt.Errorf("%s: %w (%s)", what, ErrPermission, detail)
	case transientCodes[resp.Code], resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout,
		resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%s: %w", what, &backend.TransientError{Err: fmt.Errorf("server error %d: %s", resp.StatusCode, detail)})
	}
	return fmt.Errorf("%s: server error %d: %s", what, resp.StatusCode, detail)
}

// noBucketError reports a missing bucket; it wraps backend.ErrNotExist.
type noBucketError struct{ bucket string }

func (e noBucketError) Error() string { return fmt.Sprintf("bucket %q does not exist", e.bucket) }

func (e noBucketError) Unwrap() error { return backend.ErrNotExist }

// lineError gives err a one-line message while keeping it for errors.Is
// and errors.As.
type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }

func (e *lineError) Unwrap() error { return e.err }

// oneLine joins the lines of a message so that every error is one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
