package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// errAborted ends a handshake the client aborted (NBD_OPT_ABORT).
var errAborted = errors.New("nbd: client aborted the handshake")

// handshake runs the fixed newstyle negotiation until the client picks an
// export (NBD_OPT_EXPORT_NAME or NBD_OPT_GO) and returns it.
func (s *server) handshake(conn net.Conn) (*Export, string, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicIHaveOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := conn.Write(hello[:]); err != nil {
		return nil, "", err
	}
	var cf [4]byte
	if _, err := io.ReadFull(conn, cf[:]); err != nil {
		return nil, "", fmt.Errorf("read client flags: %w", err)
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^(clientFlagFixedNewstyle|clientFlagNoZeroes) != 0 {
		return nil, "", fmt.Errorf("unknown client flags %#x", clientFlags)
	}
	noZeroes := clientFlags&clientFlagNoZeroes != 0

	for {
		var hdr [16]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return nil, "", fmt.Errorf("read option: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicIHaveOpt {
			return nil, "", fmt.Errorf("bad option magic %#x", m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		n := binary.BigEndian.Uint32(hdr[12:])
		if n > maxOptionLen {
			return nil, "", fmt.Errorf("option %d carries %d bytes, more than %d", opt, n, maxOptionLen)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(conn, data); err != nil {
			return nil, "", fmt.Errorf("read option %d: %w", opt, err)
		}
		switch opt {
		case optExportName:
			e, name, ok := s.lookup(string(data))
			if !ok {
				// The protocol has no error reply here: the server closes.
				return nil, "", fmt.Errorf("unknown export %q", data)
			}
			reply := make([]byte, 10, 10+124)
			binary.BigEndian.PutUint64(reply[0:], uint64(e.Size))
			binary.BigEndian.PutUint16(reply[8:], e.flags())
			if !noZeroes {
				reply = reply[:10+124]
			}
			if _, err := conn.Write(reply); err != nil {
				return nil, "", err
			}
			return e, name, nil
		case optAbort:
			_ = writeOptReply(conn, opt, repAck, nil) // the client may be gone already
			return nil, "", errAborted
		case optList:
			if err := s.list(conn, data); err != nil {
				return nil, "", err
			}
		case optInfo, optGo:
			e, name, err := s.info(conn, opt, data)
			if err != nil {
				return nil, "", err
			}
			if e != nil && opt == optGo {
				return e, name, nil
			}
		default:
			// NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, meta contexts,
			// extended headers and unknown options.
			if err := writeOptReply(conn, opt, repErrUnsup, nil); err != nil {
				return nil, "", err
			}
		}
	}
}

// list answers NBD_OPT_LIST: one NBD_REP_SERVER per export, then an ack.
func (s *server) list(conn net.Conn, data []byte) error {
	if len(data) != 0 {
		return writeOptReply(conn, optList, repErrInvalid, nil)
	}
	for _, name := range s.names {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		if err := writeOptReply(conn, optList, repServer, append(b, name...)); err != nil {
			return err
		}
	}
	return writeOptReply(conn, optList, repAck, nil)
}

// info answers NBD_OPT_INFO and NBD_OPT_GO. It returns the export when the
// request succeeded, nil after an error reply (the negotiation goes on).
func (s *server) info(conn net.Conn, opt uint32, data []byte) (*Export, string, error) {
	if len(data) < 6 {
		return nil, "", writeOptReply(conn, opt, repErrInvalid, nil)
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen) > uint64(len(data)-6) {
		return nil, "", writeOptReply(conn, opt, repErrInvalid, nil)
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return nil, "", writeOptReply(conn, opt, repErrInvalid, nil)
	}
	e, full, ok := s.lookup(name)
	if !ok {
		msg := []byte(fmt.Sprintf("no export named %q", name))
		return nil, "", writeOptReply(conn, opt, repErrUnknown, msg)
	}
	wantName, wantDesc := false, false
	for i := range nreq {
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}
	exp := binary.BigEndian.AppendUint16(nil, infoExport)
	exp = binary.BigEndian.AppendUint64(exp, uint64(e.Size))
	exp = binary.BigEndian.AppendUint16(exp, e.flags())
	if err := writeOptReply(conn, opt, repInfo, exp); err != nil {
		return nil, "", err
	}
	if wantName {
		b := append(binary.BigEndian.AppendUint16(nil, infoName), full...)
		if err := writeOptReply(conn, opt, repInfo, b); err != nil {
			return nil, "", err
		}
	}
	if wantDesc && e.Description != "" {
		b := append(binary.BigEndian.AppendUint16(nil, infoDescription), e.Description...)
		if err := writeOptReply(conn, opt, repInfo, b); err != nil {
			return nil, "", err
		}
	}
	// Block sizes are sent whether asked for or not: the protocol allows
	// it, and the constraints are ones every client meets.
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, minBlock)
	bs = binary.BigEndian.AppendUint32(bs, preferredBlock)
	bs = binary.BigEndian.AppendUint32(bs, maxPayload)
	if err := writeOptReply(conn, opt, repInfo, bs); err != nil {
		return nil, "", err
	}
	if err := writeOptReply(conn, opt, repAck, nil); err != nil {
		return nil, "", err
	}
	return e, full, nil
}

// writeOptReply writes one option reply.
func writeOptReply(w io.Writer, opt, typ uint32, data []byte) error {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], magicOptReply)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	_, err := w.Write(append(b, data...))
	return err
}
