// Package s3test runs a real S3 server for tests: versitygw, serving a
// temporary folder on 127.0.0.1. scripts/install-test-deps.sh installs the
// binary (scripts/install-s3-server.sh); without it the tests that need a
// server fail, unless IMAGO_TEST_S3=0 is set to skip them on purpose.
package s3test
