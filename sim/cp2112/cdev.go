package cp2112

import (
	"context"
	"encoding/binary"
	"os"
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
func registerCdev(b *Bridge) (*chardev.Cdev, error) {
	return chardev.Register(b.chip.Device(), chardev.Config{
		Name:  b.chip.Device().Name(),
		Owner: b.owner,
		Ops: chardev.Ops{
			Open:    func(c *chardev.Call) (any, error) { return &cdevOpen{}, nil },
			Ioctl:   b.cdevIoctl,
			Read:    cdevRead,
			Poll:    cdevPoll,
			Release: cdevRelease,
		},
	})
}

type cdevOpen struct {
	mu  sync.Mutex
	req *gpio.LineRequest
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
		o.req = req
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
	req := c.Private().(*cdevOpen).request()
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
	req := c.Private().(*cdevOpen).request()
	if req == nil {
		return 0
	}
	return req.Poll() & sever.EventIn
}

func cdevRelease(c *chardev.Call) {
	if req := c.Private().(*cdevOpen).request(); req != nil {
		req.Close()
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
		f.Close()
		return nil, err
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
