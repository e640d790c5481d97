package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Client is a minimal NBD client: fixed newstyle handshake with NBD_OPT_GO,
// simple replies, one request at a time. It exists for tests and
// benchmarks of the server; it is safe for concurrent use (requests are
// serialized).
type Client struct {
	conn  net.Conn
	size  int64
	flags uint16
	// BlockSize holds the minimum, preferred and maximum block sizes the
	// server advertised (zero when it sent none).
	BlockSize [3]uint32

	mu     sync.Mutex // serializes requests on conn
	cookie uint64
}

// Error is the error of a request the server refused: Errno is the
// protocol's error value (1 EPERM, 5 EIO, 22 EINVAL, 28 ENOSPC...).
type Error struct {
	Errno uint32
}

func (e *Error) Error() string { return fmt.Sprintf("nbd: server replied error %d", e.Errno) }

// Dial connects to addr (host:port) and opens the export name ("" for the
// server's default).
func Dial(ctx context.Context, addr, name string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := c.handshake(name); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd: handshake with %s: %w", addr, err)
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

func (c *Client) handshake(name string) error {
	var hello [18]byte
	if _, err := io.ReadFull(c.conn, hello[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(hello[0:]) != magicNBD || binary.BigEndian.Uint64(hello[8:]) != magicIHaveOpt {
		return errors.New("not a newstyle NBD server")
	}
	if binary.BigEndian.Uint16(hello[16:])&flagFixedNewstyle == 0 {
		return errors.New("server does not speak fixed newstyle")
	}
	cf := binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle|clientFlagNoZeroes)
	if _, err := c.conn.Write(cf); err != nil {
		return err
	}
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := c.sendOption(optGo, data); err != nil {
		return err
	}
	for {
		typ, payload, err := c.readOptReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repAck:
			if c.flags&FlagHasFlags == 0 {
				return errors.New("server sent no export information")
			}
			return nil
		case typ == repInfo && len(payload) >= 2:
			switch binary.BigEndian.Uint16(payload) {
			case infoExport:
				if len(payload) != 12 {
					return errors.New("bad NBD_INFO_EXPORT")
				}
				c.size = int64(binary.BigEndian.Uint64(payload[2:]))
				c.flags = binary.BigEndian.Uint16(payload[10:])
			case infoBlockSize:
				if len(payload) != 14 {
					return errors.New("bad NBD_INFO_BLOCK_SIZE")
				}
				for i := range c.BlockSize {
					c.BlockSize[i] = binary.BigEndian.Uint32(payload[2+4*i:])
				}
			}
		case typ&(1<<31) != 0:
			return fmt.Errorf("server refused export %q: error %#x %s", name, typ, payload)
		}
	}
}

func (c *Client) sendOption(opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	_, err := c.conn.Write(append(b, data...))
	return err
}

func (c *Client) readOptReply(opt uint32) (uint32, []byte, error) {
	var hdr [20]byte
	if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint64(hdr[0:]) != magicOptReply || binary.BigEndian.Uint32(hdr[8:]) != opt {
		return 0, nil, errors.New("bad option reply")
	}
	n := binary.BigEndian.Uint32(hdr[16:])
	if n > maxOptionLen {
		return 0, nil, errors.New("option reply too long")
	}
	payload := make([]byte, n)
	_, err := io.ReadFull(c.conn, payload)
	return binary.BigEndian.Uint32(hdr[12:]), payload, err
}

// Size returns the export's size.
func (c *Client) Size() int64 { return c.size }

// Flags returns the export's transmission flags (FlagReadOnly...).
func (c *Client) Flags() uint16 { return c.flags }

// ReadAt reads len(p) bytes at off in one request.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if err := c.do(cmdRead, 0, off, uint32(len(p)), nil, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt writes p at off in one request.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	if err := c.do(cmdWrite, 0, off, uint32(len(p)), p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Trim sends NBD_CMD_TRIM for n bytes at off.
func (c *Client) Trim(off int64, n uint32) error { return c.do(cmdTrim, 0, off, n, nil, nil) }

// Flush sends NBD_CMD_FLUSH.
func (c *Client) Flush() error { return c.do(cmdFlush, 0, 0, 0, nil, nil) }

// Close sends NBD_CMD_DISC and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.writeRequest(cmdDisc, 0, 0, 0, nil) // the server may be gone
	return c.conn.Close()
}

func (c *Client) writeRequest(typ, flags uint16, off int64, n uint32, payload []byte) error {
	c.cookie++
	var b [28]byte
	binary.BigEndian.PutUint32(b[0:], magicRequest)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], c.cookie)
	binary.BigEndian.PutUint64(b[16:], uint64(off))
	binary.BigEndian.PutUint32(b[24:], n)
	bufs := net.Buffers{b[:], payload}
	_, err := bufs.WriteTo(c.conn)
	return err
}

// do sends one request and reads its reply into into (for reads).
func (c *Client) do(typ, flags uint16, off int64, n uint32, payload, into []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.writeRequest(typ, flags, off, n, payload); err != nil {
		return err
	}
	var hdr [16]byte
	if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
		return err
	}
	if m := binary.BigEndian.Uint32(hdr[0:]); m != magicSimple {
		return fmt.Errorf("nbd: reply magic %#x, want a simple reply", m)
	}
	if binary.BigEndian.Uint64(hdr[8:]) != c.cookie {
		return errors.New("nbd: reply to another request")
	}
	if e := binary.BigEndian.Uint32(hdr[4:]); e != 0 {
		return &Error{Errno: e}
	}
	if into != nil {
		if _, err := io.ReadFull(c.conn, into); err != nil {
			return err
		}
	}
	return nil
}
