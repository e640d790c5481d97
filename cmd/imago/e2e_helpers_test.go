package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binary is the imago binary built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "imago-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The directory must be reachable by other users: one test runs the
	// binary as "nobody".
	_ = os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "imago")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build imago:", err)
		os.Exit(1)
	}
	// Commands keep a local index in the user's cache folder; keep the
	// tests' out of the real one. Tests that set XDG_CACHE_HOME themselves
	// override this (exec.Cmd uses the last value of a variable).
	cache, err := os.MkdirTemp("", "imago-e2e-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = os.Chmod(cache, 0o777)
	os.Setenv("XDG_CACHE_HOME", cache)
	code := m.Run()
	os.RemoveAll(dir)
	os.RemoveAll(cache)
	if benchTreeDir != "" {
		os.RemoveAll(benchTreeDir)
	}
	os.Exit(code)
}

// env is one test's repository and password.
type env struct {
	t        *testing.T
	repo     string
	password string
	extraEnv []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, repo: filepath.Join(t.TempDir(), "repo"), password: "correct horse battery staple"}
	e.mustRun("init")
	return e
}

// result is the outcome of one imago run.
type result struct {
	code   int
	stdout string
	stderr string
}

// run executes imago with the env's repository and password.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runWith(nil, args...)
}

func (e *env) runWith(modify func(*exec.Cmd), args ...string) result {
	e.t.Helper()
	cmd := exec.Command(binary, append([]string{"-r", e.repo}, args...)...)
	cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1")
	cmd.Env = append(cmd.Env, e.extraEnv...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if modify != nil {
		modify(cmd)
	}
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("run imago %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: so.String(), stderr: se.String()}
}

// mustRun runs imago and fails the test unless it exits 0.
func (e *env) mustRun(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("imago %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// backupJSON runs a backup with --json and returns its summary line.
func (e *env) backupJSON(args ...string) map[string]any {
	e.t.Helper()
	r := e.mustRun(append([]string{"backup", "--json"}, args...)...)
	return lastJSONLine(e.t, r.stdout)
}

func lastJSONLine(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out)
	}
	return m
}

// num reads a numeric JSON field.
func num(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("field %q missing or not a number in %v", key, m)
	}
	return v
}

// dirSize sums the sizes of the regular files below dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
