package uevent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sever-dev/sever"
)

// Config configures a Watcher. The zero Config watches the host.
type Config struct {
	// Sysfs is where sysfs is mounted; "" means "/sys".
	Sysfs string
	// QueueLen is how many kernel events the Watcher holds for a consumer
	// that has not asked for them yet; 0 means 4096. One more is an
	// overflow: the queue is dropped and the consumer gets a resync.
	QueueLen int
	// RcvBuf is the socket's receive buffer in bytes, which holds what the
	// kernel sent and the reader has not read yet; 0 means 4 MiB (set with
	// SO_RCVBUFFORCE where allowed, else SO_RCVBUF, capped by the kernel).
	RcvBuf int
}

// Watcher delivers the host's uevents to one consumer, in the kernel's
// order, through Next. The first event is a resync whose Snapshot lists the
// devices present when the Watcher started; then come the kernel's events.
//
// A goroutine of its own reads the netlink socket and queues what it reads;
// it never waits for the consumer. Nothing is lost silently: when the queue
// overflows (the consumer is QueueLen events behind) or the kernel reports
// ENOBUFS (its socket buffer overflowed: events were dropped before the
// reader saw them), the queue is dropped and the consumer's next event is a
// resync (Reason ReasonOverflow or ReasonENOBUFS) with a fresh Snapshot,
// read from /sys by Next on the consumer's goroutine. The events queued
// after a resync may repeat what its Snapshot already shows (an "add" of a
// device the snapshot lists, a "remove" of one it does not): apply them
// idempotently.
//
//	w, err := uevent.Listen(uevent.Config{})
//	defer w.Close()
//	for {
//		ev, err := w.Next(ctx) // ev.Action == ActionResync: replace what you knew by ev.Snapshot
//	}
//
// Only the kernel's messages are taken (sender port 0, multicast group 1);
// udev's rebroadcasts (group 2) are not read. A Watcher is safe for
// concurrent use, but events are delivered once: two goroutines calling
// Next share one stream.
type Watcher struct {
	sysfs  string
	max    int
	f      *os.File // the netlink socket; closed by Close, which wakes the reader
	rc     syscall.RawConn
	recv   func(buf []byte) (int, error) // the reader's receive; replaced in tests
	done   chan struct{}                 // closed when the reader returns
	avail  chan struct{}                 // cap 1: something was queued, or the Watcher closed
	mu     sync.Mutex
	q      []Event
	resync string // the pending resync's reason; "" if none
	closed bool
	err    error // why the reader stopped, if not Close
}

// Listen opens a NETLINK_KOBJECT_UEVENT socket and starts reading it. It
// needs no privilege. The socket is bound before the first Next reads /sys,
// so a device that appears between the two is seen at least once.
func Listen(cfg Config) (*Watcher, error) { return listen(cfg, nil) }

// listen is Listen; wrap, if not nil, wraps the reader's receive (tests
// inject the kernel's ENOBUFS with it).
func listen(cfg Config, wrap func(func([]byte) (int, error)) func([]byte) (int, error)) (*Watcher, error) {
	if cfg.QueueLen < 0 || cfg.RcvBuf < 0 {
		return nil, fmt.Errorf("uevent: negative QueueLen or RcvBuf: %w", sever.ErrInvalid)
	}
	w := &Watcher{sysfs: cfg.Sysfs, max: cfg.QueueLen, resync: ReasonStart,
		done: make(chan struct{}), avail: make(chan struct{}, 1)}
	if w.sysfs == "" {
		w.sysfs = "/sys"
	}
	if w.max == 0 {
		w.max = 4096
	}
	rcvbuf := cfg.RcvBuf
	if rcvbuf == 0 {
		rcvbuf = 4 << 20
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent: netlink socket: %w", err)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf) // best effort: the kernel caps it
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		_ = unix.Close(fd) // never bound: the bind error is the news
		return nil, fmt.Errorf("uevent: bind netlink socket: %w", err)
	}
	// The runtime poller, not a blocking recvfrom: Close wakes the reader
	// at once and the read costs no thread while it waits.
	w.f = os.NewFile(uintptr(fd), "uevent")
	if w.rc, err = w.f.SyscallConn(); err != nil {
		_ = w.f.Close() // never read from: the SyscallConn error is the news
		return nil, err
	}
	w.recv = w.recvKernel
	if wrap != nil {
		w.recv = wrap(w.recv)
	}
	go w.read()
	return w, nil
}

// recvKernel receives one message from the kernel, skipping any other
// sender's.
func (w *Watcher) recvKernel(buf []byte) (int, error) {
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := w.rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return 0, err
		}
		if rerr != nil {
			return 0, rerr
		}
		if nl, ok := from.(*unix.SockaddrNetlink); ok && nl.Pid == 0 {
			return n, nil
		}
	}
}

// read is the reader goroutine: it queues every message until Close.
func (w *Watcher) read() {
	defer close(w.done)
	buf := make([]byte, 64<<10) // a uevent is at most 2 KiB (UEVENT_BUFFER_SIZE)
	for {
		n, err := w.recv(buf)
		switch {
		case errors.Is(err, unix.ENOBUFS):
			w.lose(ReasonENOBUFS)
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			w.mu.Lock()
			if !w.closed {
				w.err = fmt.Errorf("uevent: reading netlink socket: %w", err)
			}
			w.mu.Unlock()
			w.signal()
			return
		}
		ev, err := Parse(buf[:n])
		if err != nil {
			continue // not a uevent: nothing the consumer could use
		}
		w.mu.Lock()
		if len(w.q) >= w.max {
			w.q, w.resync = nil, ReasonOverflow
		} else {
			w.q = append(w.q, ev)
		}
		w.mu.Unlock()
		w.signal()
	}
}

// lose drops the queue and owes the consumer a resync.
func (w *Watcher) lose(reason string) {
	w.mu.Lock()
	w.q, w.resync = nil, reason
	w.mu.Unlock()
	w.signal()
}

func (w *Watcher) signal() {
	select {
	case w.avail <- struct{}{}:
	default:
	}
}

// Next returns the next event, waiting for one until ctx is done. A resync
// comes first if one is owed; its Snapshot is read from /sys during the
// call. After Close, Next returns an error wrapping sever.ErrClosed; if the
// socket failed, that error; if ctx is done first, ctx's error.
func (w *Watcher) Next(ctx context.Context) (Event, error) {
	for {
		w.mu.Lock()
		switch {
		case w.closed:
			w.mu.Unlock()
			return Event{}, fmt.Errorf("uevent: Next after Close: %w", sever.ErrClosed)
		case w.resync != "":
			reason := w.resync
			w.resync, w.q = "", nil
			w.mu.Unlock()
			snap, err := Enumerate(w.sysfs)
			if err != nil {
				w.lose(reason) // still owed
				return Event{}, fmt.Errorf("uevent: reading %s: %w", w.sysfs, err)
			}
			return Event{Action: ActionResync, Reason: reason, Snapshot: snap}, nil
		case len(w.q) > 0:
			ev := w.q[0]
			w.q[0] = Event{}
			w.q = w.q[1:]
			w.mu.Unlock()
			return ev, nil
		case w.err != nil:
			err := w.err
			w.mu.Unlock()
			return Event{}, err
		}
		w.mu.Unlock()
		select {
		case <-w.avail:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Close closes the socket and waits for the reader goroutine to return.
// Events not yet delivered are dropped. A Next blocked in another goroutine
// returns an error wrapping sever.ErrClosed. The first Close returns nil;
// later ones return an error wrapping sever.ErrClosed.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return fmt.Errorf("uevent: second Close: %w", sever.ErrClosed)
	}
	w.closed = true
	w.q = nil
	w.mu.Unlock()
	err := w.f.Close()
	<-w.done
	close(w.avail) // wakes every Next; nothing sends on it any more
	return err
}
