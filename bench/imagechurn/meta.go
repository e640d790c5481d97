package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// runMeta reads one decoded index file as JSON on stdin (`imago cat index
// ID` or `restic cat index ID`) and prints the stored bytes of its tree
// blobs and the number of data blobs: "tree_bytes data_blobs".
func runMeta(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: meta imago|restic < index.json")
	}
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	var tree, data int64
	switch args[0] {
	case "imago":
		var idx struct {
			Packs []struct {
				Blobs []struct {
					Handle struct{ Kind int }
					Length int64
				}
			}
		}
		if err := dec.Decode(&idx); err != nil {
			return err
		}
		for _, p := range idx.Packs {
			for _, b := range p.Blobs {
				if b.Handle.Kind == 2 { // chunk.KindTree
					tree += b.Length
				} else {
					data++
				}
			}
		}
	case "restic":
		var idx struct {
			Packs []struct {
				Blobs []struct {
					Type   string `json:"type"`
					Length int64  `json:"length"`
				} `json:"blobs"`
			} `json:"packs"`
		}
		if err := dec.Decode(&idx); err != nil {
			return err
		}
		for _, p := range idx.Packs {
			for _, b := range p.Blobs {
				if b.Type == "tree" {
					tree += b.Length
				} else {
					data++
				}
			}
		}
	default:
		return fmt.Errorf("unknown index format %q", args[0])
	}
	fmt.Println(tree, data)
	return nil
}

// runField prints field NAME of the last JSON object on stdin that has it
// (backup --json summaries), or "n/a".
func runField(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: field NAME < json-lines")
	}
	val := "n/a"
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if v, ok := m[args[0]]; ok {
			val = strings.Trim(string(v), `"`)
		}
	}
	fmt.Println(val)
	return sc.Err()
}
