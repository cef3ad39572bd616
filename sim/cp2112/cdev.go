package cp2112

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/subsys/gpio"
)

// The GPIO char device's commands (type 'B', as Linux's GPIO uAPI).
var (
	// IoctlRequestLine requests one line on the open: arg[0] is the line,
	// arg[1] the edges to report (1 rising, 2 falling, 3 both). One
	// request per open; a second is EBUSY.
	IoctlRequestLine = chardev.IOW('B', 0x07, 2)
	// IoctlGetValue reads the requested line: arg[0] is 1 if high.
	IoctlGetValue = chardev.IOR('B', 0x08, 1)
)

// EventSize is the size of one edge event read from the char device:
// line (4 bytes), rising (4), sequence (8), little-endian.
const EventSize = 16

// registerCdev makes dev/gpiochipN for user space on the chip's device,
// so it is severed with the chip. Its per-open state is a gpio line
// request; reads return the request's edge events, and poll reports
// EventIn while some are buffered. Pollers sleep on the open's own queue
// (chardev's), woken by the interrupt path's Notify.
//
// An open speaks one of two protocols, chosen by its first use: the binary
// one of the ioctls (IoctlRequestLine, then reads of EventSize-byte
// events), or — from its first write on — the text protocol of
// TextProtocol, for processes that cannot issue ioctls (a shell or a
// Python script on the FUSE mount).
func registerCdev(b *Bridge) (*chardev.Cdev, error) {
	return chardev.Register(b.chip.Device(), chardev.Config{
		Name:  b.chip.Device().Name(),
		Owner: b.owner,
		Ops: chardev.Ops{
			Open:    func(c *chardev.Call) (any, error) { return &cdevOpen{}, nil },
			Ioctl:   b.cdevIoctl,
			Read:    cdevRead,
			Write:   b.cdevWrite,
			Poll:    cdevPoll,
			Release: cdevRelease,
		},
	})
}

type cdevOpen struct {
	mu   sync.Mutex
	req  *gpio.LineRequest
	line int    // the line req holds
	text bool   // the open has written a text command: reads return text
	out  []byte // text not yet read: replies to get, then event lines
}

func (o *cdevOpen) request() *gpio.LineRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.req
}

func (b *Bridge) cdevIoctl(c *chardev.Call, cmd chardev.Cmd, arg []byte) (int, error) {
	o := c.Private().(*cdevOpen)
	switch cmd {
	case IoctlRequestLine:
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.req != nil {
			return 0, sever.ErrBusy
		}
		req, err := b.chip.RequestLines(gpio.RequestConfig{Offsets: []int{int(arg[0])}, Consumer: "gpiochip-cdev", Edges: gpio.Edge(arg[1])})
		if err != nil {
			return 0, err
		}
		o.req, o.line = req, int(arg[0])
		return 0, nil
	case IoctlGetValue:
		req := o.request()
		if req == nil {
			return 0, sever.ErrInvalid
		}
		vs, err := req.Values()
		if err != nil {
			return 0, err
		}
		arg[0] = 0
		if vs[0] {
			arg[0] = 1
		}
		return 0, nil
	}
	return 0, sever.ErrNotSupported
}

func cdevRead(c *chardev.Call, buf []byte) (int, error) {
	o := c.Private().(*cdevOpen)
	o.mu.Lock()
	text := o.text
	o.mu.Unlock()
	if text {
		return o.readText(buf)
	}
	req := o.request()
	if req == nil || len(buf) < EventSize {
		return 0, sever.ErrInvalid
	}
	if req.Poll()&sever.EventIn == 0 {
		return 0, sever.ErrWouldBlock
	}
	// An event is buffered: ReadEvent returns at once. The short deadline
	// only guards against a concurrent reader of the same open taking it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	ev, err := req.ReadEvent(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return 0, sever.ErrWouldBlock
		}
		return 0, err
	}
	binary.LittleEndian.PutUint32(buf[0:], uint32(ev.Offset))
	if ev.Rising {
		binary.LittleEndian.PutUint32(buf[4:], 1)
	}
	binary.LittleEndian.PutUint64(buf[8:], ev.Seq)
	return EventSize, nil
}

func cdevPoll(c *chardev.Call) sever.Events {
	o := c.Private().(*cdevOpen)
	o.mu.Lock()
	pending := len(o.out) > 0
	req := o.req
	o.mu.Unlock()
	if pending {
		return sever.EventIn
	}
	if req == nil {
		return 0
	}
	return req.Poll() & sever.EventIn
}

func cdevRelease(c *chardev.Call) {
	if req := c.Private().(*cdevOpen).request(); req != nil {
		// ENODEV when the chip went first and freed the request with
		// itself: either way the line is free now, and Release has no
		// caller to tell.
		_ = req.Close()
	}
}

// LineEvent is one edge event as user space reads it from the char device.
type LineEvent struct {
	Line   int
	Rising bool
	Seq    uint64
}

// RequestLineEvents is the user-space side (libgpiod's gpiomon): it opens
// dev/<name> on reg and requests line for edges. The returned file reads
// events with ReadLineEvent and polls with Wait(ctx, sever.EventIn).
func RequestLineEvents(reg *chardev.Registry, name string, line int, edges gpio.Edge) (*chardev.File, error) {
	f, err := reg.Open(name, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	if _, err := f.Ioctl(IoctlRequestLine, []byte{byte(line), byte(edges)}); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return f, nil
}

// ReadLineEvent reads the next edge event from f, waiting for one.
func ReadLineEvent(ctx context.Context, f *chardev.File) (LineEvent, error) {
	buf := make([]byte, EventSize)
	if _, err := f.ReadContext(ctx, buf); err != nil {
		return LineEvent{}, err
	}
	return LineEvent{
		Line:   int(binary.LittleEndian.Uint32(buf[0:])),
		Rising: binary.LittleEndian.Uint32(buf[4:]) == 1,
		Seq:    binary.LittleEndian.Uint64(buf[8:]),
	}, nil
}

// LineValue reads the value of the line requested on f.
func LineValue(f *chardev.File) (bool, error) {
	arg := []byte{0}
	if _, err := f.Ioctl(IoctlGetValue, arg); err != nil {
		return false, err
	}
	return arg[0] == 1, nil
}

// TextProtocol describes the char device's text protocol, the one a
// process on the FUSE mount uses (it cannot issue ioctls there). An open
// switches to it with its first write; each write carries one or more
// commands, one per line:
//
//	request LINE [EDGES]  request LINE for this open, reporting EDGES:
//	                      none, rising, falling or both (the default);
//	                      a second request on one open is EBUSY, a line
//	                      another consumer holds is EBUSY
//	get LINE              queue the line's level for reading as "LINE 0"
//	                      or "LINE 1"; the open's requested line is read
//	                      through its request, any other free line through
//	                      a request made for the read (EBUSY if taken)
//
// A malformed command or a line out of range is EINVAL. Reads return the
// queued replies first, then one line per edge event on the requested
// line, oldest first:
//
//	LINE rising|falling SEQ
//
// where SEQ counts the request's events from 1 (a gap means events were
// dropped for a full buffer). A read takes as many bytes as fit; with
// nothing to read it blocks (or fails with EAGAIN on a non-blocking file),
// and poll reports POLLIN while something is queued. Once the board is
// unplugged every read and write fails with ENODEV and poll reports
// POLLERR|POLLHUP, as for the binary protocol.
const TextProtocol = "request LINE [none|rising|falling|both]; get LINE; read: LINE rising|falling SEQ"

// cdevWrite runs text commands (see TextProtocol).
func (b *Bridge) cdevWrite(c *chardev.Call, data []byte) (int, error) {
	o := c.Private().(*cdevOpen)
	o.mu.Lock()
	o.text = true
	o.mu.Unlock()
	queued := false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := &sever.ObjectError{Object: c.Cdev().Name(), Err: fmt.Errorf("%q: want %s: %w", line, TextProtocol, sever.ErrInvalid)}
		if len(f) < 2 || len(f) > 3 {
			return 0, bad
		}
		n, err := strconv.Atoi(f[1])
		if err != nil || n < 0 || n >= b.chip.Lines() {
			return 0, bad
		}
		switch {
		case f[0] == "request":
			edges := gpio.EdgeBoth
			if len(f) == 3 {
				var ok bool
				if edges, ok = map[string]gpio.Edge{"none": gpio.EdgeNone, "rising": gpio.EdgeRising, "falling": gpio.EdgeFalling, "both": gpio.EdgeBoth}[f[2]]; !ok {
					return 0, bad
				}
			}
			if err := o.requestLine(b.chip, n, edges); err != nil {
				return 0, err
			}
		case f[0] == "get" && len(f) == 2:
			v, err := o.get(b.chip, n)
			if err != nil {
				return 0, err
			}
			o.mu.Lock()
			o.out = fmt.Appendf(o.out, "%d %d\n", n, v)
			o.mu.Unlock()
			queued = true
		default:
			return 0, bad
		}
	}
	if queued {
		c.Cdev().Notify(sever.EventIn)
	}
	return len(data), nil
}

func (o *cdevOpen) requestLine(chip *gpio.Chip, line int, edges gpio.Edge) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.req != nil {
		return sever.ErrBusy
	}
	req, err := chip.RequestLines(gpio.RequestConfig{Offsets: []int{line}, Consumer: "gpiochip-cdev", Edges: edges})
	if err != nil {
		return err
	}
	o.req, o.line = req, line
	return nil
}

// get reads line's level: through the open's request if it holds line,
// else through a request of its own for the read.
func (o *cdevOpen) get(chip *gpio.Chip, line int) (int, error) {
	o.mu.Lock()
	req, held := o.req, o.line
	o.mu.Unlock()
	var v bool
	if req != nil && held == line {
		vs, err := req.Values()
		if err != nil {
			return 0, err
		}
		v = vs[0]
	} else {
		l, err := chip.RequestLine(line, "gpiochip-cdev")
		if err != nil {
			return 0, err
		}
		v, err = l.Value()
		if cerr := l.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, err
		}
	}
	if v {
		return 1, nil
	}
	return 0, nil
}

// readText serves a text-mode read: the queued text, refilled from the
// request's buffered events.
func (o *cdevOpen) readText(buf []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.out) == 0 && o.req != nil {
		for o.req.Poll()&sever.EventIn != 0 {
			// An event is buffered: ReadEvent returns at once.
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			ev, err := o.req.ReadEvent(ctx)
			cancel()
			if err != nil {
				if len(o.out) == 0 && ctx.Err() == nil {
					return 0, err
				}
				break
			}
			edge := "falling"
			if ev.Rising {
				edge = "rising"
			}
			o.out = fmt.Appendf(o.out, "%d %s %d\n", ev.Offset, edge, ev.Seq)
		}
	}
	if len(o.out) == 0 {
		return 0, sever.ErrWouldBlock
	}
	n := copy(buf, o.out)
	o.out = o.out[n:]
	return n, nil
}
