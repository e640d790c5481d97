package main

import (
	"path/filepath"
	"testing"
)

// listedKey is a key as key list --json prints it.
type listedKey struct {
	ID       string `json:"id"`
	Current  bool   `json:"current"`
	Host     string `json:"host"`
	Username string `json:"username"`
}

// TestKeyManagement adds, changes and removes passwords: each password
// opens the repository exactly while its key file exists, the key files
// record the host and user given (in the clear, so --host and --user keep
// the machine's names out), and the key in use cannot be removed.
func TestKeyManagement(t *testing.T) {
	e := &env{t: t, repo: filepath.Join(t.TempDir(), "repo"), password: "first password"}
	e.mustRun("init", "--host", "build-host", "--user", "alice")
	data := t.TempDir()
	writeRandom(t, filepath.Join(data, "f"), 1000, 1)
	e.mustRun("backup", "-q", data)

	with := func(password string) *env { return &env{t: t, repo: e.repo, password: password} }
	opens := func(password string) bool {
		t.Helper()
		switch r := with(password).run("snapshots", "-q"); r.code {
		case 0:
			return true
		case exitWrongPass:
			return false
		default:
			t.Fatalf("snapshots with %q: exit %d: %s", password, r.code, r.stderr)
			return false
		}
	}
	keys := func(password string) []listedKey {
		t.Helper()
		var ks []listedKey
		if err := jsonUnmarshal(with(password).mustRun("key", "list", "--json").stdout, &ks); err != nil {
			t.Fatal(err)
		}
		return ks
	}
	newPassword := func(pw string) string { return passwordFile(t, &env{password: pw}) }

	if ks := keys("first password"); len(ks) != 1 || !ks[0].Current || ks[0].Host != "build-host" || ks[0].Username != "alice" {
		t.Fatalf("after init: %+v", ks)
	}
	e.mustRun("key", "add", "--new-password-file", newPassword("second password"), "--host", "laptop", "--user", "bob")
	ks := keys("second password")
	if len(ks) != 2 {
		t.Fatalf("after key add: %+v", ks)
	}
	var second listedKey
	for _, k := range ks {
		if k.Current {
			second = k
		}
	}
	if second.Host != "laptop" || second.Username != "bob" {
		t.Fatalf("the added key records %q/%q, want laptop/bob", second.Host, second.Username)
	}

	// passwd replaces the key in use; the other one still opens.
	e.mustRun("key", "passwd", "--new-password-file", newPassword("third password"))
	if opens("first password") || !opens("third password") || !opens("second password") {
		t.Fatal("after passwd: the old password still opens, or the new or the other one does not")
	}
	for _, k := range keys("third password") {
		if k.Current && (k.Host != "build-host" || k.Username != "alice") {
			t.Errorf("passwd changed the recorded owner to %q/%q", k.Host, k.Username)
		}
	}

	if r := with("second password").run("key", "remove", second.ID); r.code == 0 {
		t.Fatal("the key in use was removed")
	}
	with("third password").mustRun("key", "remove", second.ID)
	if opens("second password") || !opens("third password") {
		t.Fatal("after key remove: the removed password still opens, or the kept one does not")
	}
	if ks := keys("third password"); len(ks) != 1 {
		t.Fatalf("after key remove: %+v", ks)
	}
	with("third password").mustRun("check", "--read-data")
}
