package repo

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecodeConfig feeds arbitrary plaintext to the config decoder: it must
// never panic, and a config it accepts must survive an encode/decode round
// trip unchanged and pass validation.
func FuzzDecodeConfig(f *testing.F) {
	c, err := newConfig(InitOptions{Polynomial: TestPolynomial})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.MarshalIndent(c, "", "  ")
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2,"id":"00"}`))
	f.Add(append(append([]byte{}, good...), []byte(` {}`)...))
	f.Add([]byte(`{"version":1,"unknown":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeConfig(b)
		if err != nil {
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("decodeConfig accepted an invalid config: %v", err)
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeConfig(again)
		if err != nil {
			t.Fatalf("re-encoded config does not decode: %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config: %+v != %+v", c, c2)
		}
	})
}

func TestDecodeConfigRejects(t *testing.T) {
	c, err := newConfig(InitOptions{Polynomial: TestPolynomial})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := json.Marshal(c)
	if _, err := decodeConfig(good); err != nil {
		t.Fatalf("a valid config is refused: %v", err)
	}
	bad := map[string]string{
		"unknown field":       `{"version":1,"surprise":1}`,
		"trailing data":       string(good) + `[]`,
		"version 2":           `{"version":2}`,
		"reducible poly":      string(good[:0]) + `{"version":1,"id":"` + c.ID + `","chunker_polynomial":"2","file_chunker":{"min":524288,"max":8388608,"average_bits":20},"image_chunker":{"min":65536,"max":1048576,"average_bits":17,"segment":16777216},"compression":"default","pack_size":16777216}`,
		"segment below max":   `{"version":1,"id":"` + c.ID + `","chunker_polynomial":"3da3358b4dc173","file_chunker":{"min":524288,"max":8388608,"average_bits":20},"image_chunker":{"min":65536,"max":1048576,"average_bits":17,"segment":4096},"compression":"default","pack_size":16777216}`,
		"file segment":        `{"version":1,"id":"` + c.ID + `","chunker_polynomial":"3da3358b4dc173","file_chunker":{"min":524288,"max":8388608,"average_bits":20,"segment":16777216},"image_chunker":{"min":65536,"max":1048576,"average_bits":17,"segment":16777216},"compression":"default","pack_size":16777216}`,
		"pack size too small": `{"version":1,"id":"` + c.ID + `","chunker_polynomial":"3da3358b4dc173","file_chunker":{"min":524288,"max":8388608,"average_bits":20},"image_chunker":{"min":65536,"max":1048576,"average_bits":17,"segment":16777216},"compression":"default","pack_size":10}`,
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeConfig([]byte(b)); err == nil {
				t.Fatalf("accepted %s", b)
			}
		})
	}
}
