package repo

import (
	"context"
	"errors"
	"testing"

	"github.com/imagobackup/imago/repo/backend/mem"
	"github.com/imagobackup/imago/repo/crypto"
)

func TestKeys(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be)
	first := r.currentKey()

	second, err := r.AddKey(ctx, "second", crypto.TestKDF, "laptop", "ann")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, "second", OpenOptions{NoIndex: true})
	if err != nil {
		t.Fatalf("Open with the added password: %v", err)
	}
	if r2.Config().ID != r.Config().ID {
		t.Error("the added key opens another repository")
	}

	keys, err := r2.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("ListKeys = %+v, want 2 keys", keys)
	}
	for _, k := range keys {
		if k.Current != (k.Name == second) {
			t.Errorf("key %s: Current = %v", k.Name[:8], k.Current)
		}
		if k.Name == second && (k.Host != "laptop" || k.Username != "ann" || k.Created.IsZero()) {
			t.Errorf("added key listed as %+v", k)
		}
	}

	if err := r2.RemoveKey(ctx, second[:10]); err == nil {
		t.Error("RemoveKey removed the key in use")
	}
	if err := r2.RemoveKey(ctx, first[:10]); err != nil {
		t.Fatalf("RemoveKey by prefix: %v", err)
	}
	if _, err := Open(ctx, be, TestPassword, OpenOptions{}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("Open with the removed key's password = %v", err)
	}
	// Open with a third key so that the second is not in use, then try to
	// remove the last remaining key after the third is gone.
	third, err := r2.AddKey(ctx, "third", crypto.TestKDF, "", "")
	if err != nil {
		t.Fatal(err)
	}
	r3, err := Open(ctx, be, "third", OpenOptions{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.RemoveKey(ctx, third); err != nil {
		t.Fatal(err)
	}
	if err := r3.RemoveKey(ctx, second); err == nil {
		t.Error("RemoveKey removed the last key")
	}
}

func TestChangePassword(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be)
	if err := r.ChangePassword(ctx, "new secret", crypto.TestKDF); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, TestPassword, OpenOptions{}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("old password still opens: %v", err)
	}
	r2, err := Open(ctx, be, "new secret", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := r2.ListKeys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Current || keys[0].Host != "testhost" {
		t.Errorf("after ChangePassword: keys %+v, err %v; want one current key keeping its host", keys, err)
	}
	// The session that changed the password knows its new key.
	if err := r.RemoveKey(ctx, keys[0].Name); err == nil {
		t.Error("RemoveKey removed the new key in use")
	}
}
