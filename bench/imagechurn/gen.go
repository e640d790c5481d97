package main

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
)

// vocabulary feeds generated log lines and database rows; text made of it
// compresses about 4:1 with zstd, like real logs.
var vocabulary = strings.Fields(`request response session user account order invoice payment
shipment customer product warehouse backup restore snapshot volume disk block cache miss hit
timeout retry connection accepted closed refused error warning info debug trace service worker
queue job started finished failed succeeded latency bytes records rows updated inserted deleted
index table page checkpoint commit rollback transaction lock wait granted released alice bob
carol dave erin frank grace heidi ivan judy mallory oscar peggy trent victor walter berlin
paris london madrid rome vienna prague warsaw oslo helsinki`)

var levels = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}

// logText returns about n bytes of log lines stamped with night.
func logText(r *rand.Rand, night, n int) []byte {
	var b strings.Builder
	b.Grow(n + 256)
	sec := r.IntN(86400)
	for b.Len() < n {
		sec += r.IntN(20)
		fmt.Fprintf(&b, "2026-01-%02d %02d:%02d:%02d.%03d %s svc-%d[%d]: ", 1+night%28, sec/3600%24, sec/60%60, sec%60,
			r.IntN(1000), levels[r.IntN(len(levels))], r.IntN(8), 1000+r.IntN(30000))
		for w := 3 + r.IntN(10); w > 0; w-- {
			b.WriteString(vocabulary[r.IntN(len(vocabulary))])
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "id=%016x took=%dms\n", r.Uint64(), r.IntN(2000))
	}
	return []byte(b.String()[:n])
}

// randomBytes returns n incompressible bytes (photos, archives, media).
func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// dbPage fills p (one 4 KiB database page) like a B-tree leaf of a row
// store: a header (page number, LSN, checksum) and rows of an ID, text
// columns, numbers and a 16-byte random token; zstd shrinks it about 2:1.
func dbPage(r *rand.Rand, p []byte, pageNo uint32, lsn uint64) {
	clear(p)
	binary.LittleEndian.PutUint32(p[0:], 0xDBDBDB01)
	binary.LittleEndian.PutUint32(p[4:], pageNo)
	binary.LittleEndian.PutUint64(p[8:], lsn)
	off := 24
	row := uint64(pageNo) * 40
	for {
		var rb []byte
		rb = binary.AppendUvarint(rb, row)
		rb = append(rb, vocabulary[r.IntN(len(vocabulary))]...)
		rb = append(rb, '|')
		rb = append(rb, vocabulary[r.IntN(len(vocabulary))]...)
		rb = append(rb, '|')
		rb = binary.LittleEndian.AppendUint32(rb, uint32(r.IntN(100000)))
		rb = binary.LittleEndian.AppendUint64(rb, lsn-uint64(r.IntN(1000)))
		rb = binary.LittleEndian.AppendUint64(rb, r.Uint64())
		rb = binary.LittleEndian.AppendUint64(rb, r.Uint64())
		if off+2+len(rb) > len(p)-64 {
			break
		}
		binary.LittleEndian.PutUint16(p[off:], uint16(len(rb)))
		copy(p[off+2:], rb)
		off += 2 + len(rb)
		row++
	}
	binary.LittleEndian.PutUint32(p[16:], uint32(off))
	binary.LittleEndian.PutUint32(p[20:], crc32.ChecksumIEEE(p[24:]))
}
