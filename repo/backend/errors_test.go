package backend

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestIsTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", io.ErrUnexpectedEOF, false},
		{"direct", &TransientError{Err: io.ErrUnexpectedEOF}, true},
		{"wrapped", fmt.Errorf("load data/ab: %w", &TransientError{Err: io.EOF}), true},
		{"not exist", fmt.Errorf("x: %w", ErrNotExist), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsTransient(tt.err); got != tt.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestTransientErrorUnwraps(t *testing.T) {
	err := fmt.Errorf("save: %w", &TransientError{Err: ErrNotExist})
	if !errors.Is(err, ErrNotExist) {
		t.Errorf("errors.Is(%v, ErrNotExist) = false, want true", err)
	}
}

func TestHandleValidate(t *testing.T) {
	tests := []struct {
		h     Handle
		valid bool
	}{
		{Handle{Type: Config}, true},
		{Handle{Type: Config, Name: "x"}, false},
		{Handle{Type: Pack, Name: "ab"}, true},
		{Handle{Type: Pack, Name: "a"}, false},
		{Handle{Type: Key, Name: "a"}, true},
		{Handle{Type: Index, Name: ""}, false},
		{Handle{Type: Snapshot, Name: "a/b"}, false},
		{Handle{Type: Snapshot, Name: `a\b`}, false},
		{Handle{Type: Lock, Name: "a\x00"}, false},
		{Handle{Type: Lock, Name: ".tmp-1"}, false},
		{Handle{Type: Lock, Name: ".."}, false},
		{Handle{Type: "other", Name: "ab"}, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%q", tt.h.Type, tt.h.Name), func(t *testing.T) {
			err := tt.h.Validate()
			if tt.valid && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if !tt.valid && !errors.Is(err, ErrInvalidHandle) {
				t.Errorf("Validate() = %v, want error wrapping ErrInvalidHandle", err)
			}
		})
	}
}
