package hostdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sever-dev/sever"
)

// File is a handle on a real device file — a tty, a hidraw node, a
// gpiochip, a tun/tap queue, any character device — that turns the
// device's disappearance into sever's contract instead of a Read that
// blocks forever or returns nothing:
//
//	open ──device gone──▶ severed ──Close──▶ closed
//	  └─────────────────────Close──────────────▲
//
// open: Read, Write, Poll and Control run inside the handle's active
// reference (a sever.Active) on the device's descriptor. severed: the device
// went — its remove uevent reached the Host, or the kernel said so on the
// descriptor (EIO, ENODEV, ENXIO, EBADFD, or POLLHUP/POLLERR); every call
// blocked on the descriptor has woken with an error wrapping
// sever.ErrNoDevice (Poll: EventErr|EventHup), every later call returns one
// at once, and the descriptor is closed, exactly once, after the calls that
// were in flight drained. closed: Close ran; every call returns an error
// wrapping sever.ErrClosed.
//
// Waiting is done by the Go runtime's poller: the descriptor is
// non-blocking and wrapped in an os.File, so a blocked Read costs no thread,
// and severing wakes it by setting a deadline in the past — a deadline the
// handle never lifts again. Poll, which must report POLLHUP and POLLERR as
// they are, waits in poll(2) on the descriptor and an eventfd that severing
// and Close write.
//
// Close never hangs: the calls it waits for are woken by it; no user
// callback runs inside the handle's active reference, so Close may be
// called from any goroutine, from a Gone callback, or while another
// goroutine is blocked in Read. The handle starts no goroutine.
type File struct {
	name string
	a    *sever.Active
	f    *os.File
	rc   syscall.RawConn
	wake int // eventfd: readable from the sever or Close on; closed with f
	gone error

	mu       sync.Mutex // orders deadline changes against the sever's wake
	down     atomic.Bool
	closed   atomic.Bool
	byDevice bool     // the device went (not Close): Gone callbacks run
	onGone   []func() // under mu; nil once run
	severed  chan struct{}

	unlink  func() // set by Host.Open: leave the device's removal path
	release sync.Once
	relErr  error
}

// NewFile makes a handle of fd, which it takes over: it sets it
// non-blocking and closes it exactly once, when the handle severs or is
// closed. name names the handle in errors ("/dev/ttyUSB0"). fd must be a
// descriptor the Go runtime's poller accepts (character devices, sockets,
// pipes; not regular files), else NewFile returns an error wrapping
// sever.ErrInvalid and fd is left open.
func NewFile(fd int, name string) (*File, error) {
	if fd < 0 {
		return nil, fmt.Errorf("hostdev: %s: descriptor %d: %w", name, fd, sever.ErrInvalid)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("hostdev: %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil, fmt.Errorf("hostdev: %s: not a device file: %w", name, sever.ErrInvalid)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("hostdev: %s: eventfd: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(wake) // never used: err is the news
		return nil, fmt.Errorf("hostdev: %s: %w", name, err)
	}
	h := &File{
		name:    name,
		a:       sever.NewActive("hostdev:" + name),
		f:       os.NewFile(uintptr(fd), name),
		wake:    wake,
		gone:    &sever.ObjectError{Object: "hostdev: " + name, Err: sever.ErrNoDevice},
		severed: make(chan struct{}),
	}
	h.rc, _ = h.f.SyscallConn() // fails only for a nil or closed *os.File
	return h, nil
}

// Open opens the device file at path (flag as for os.OpenFile; O_NONBLOCK
// and O_CLOEXEC are added) as a handle that severs on the kernel's word
// alone. A device the Host knows of is better opened with Host.Open, which
// also severs the handle at its remove uevent.
func Open(path string, flag int) (*File, error) {
	fd, err := unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f, err := NewFile(fd, path)
	if err != nil {
		_ = unix.Close(fd) // NewFile refused it: its error is the news
		return nil, err
	}
	return f, nil
}

// Name returns the name the handle was made with.
func (h *File) Name() string { return h.name }

// enter begins a call in *t: it fails with ErrClosed after Close and with the
// gone error once severing has begun.
func (h *File) enter(t *sever.Token) error {
	if h.closed.Load() {
		return h.closedErr()
	}
	var ok bool
	if *t, ok = h.a.Enter(); !ok || h.down.Load() {
		if ok {
			h.a.Exit(t)
		}
		return h.downErr()
	}
	return nil
}

func (h *File) closedErr() error {
	return &sever.ObjectError{Object: "hostdev: " + h.name, Err: sever.ErrClosed}
}

// downErr is the error of a call refused or woken by the sever or Close.
func (h *File) downErr() error {
	if h.closed.Load() {
		return h.closedErr()
	}
	return h.gone
}

// goneErrno reports whether errno is the kernel saying the device is gone.
func goneErrno(err error) bool {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return false
	}
	switch e {
	case unix.EIO, unix.ENODEV, unix.ENXIO, unix.EBADFD:
		return true
	}
	return false
}

// hungUp polls the descriptor without waiting and reports POLLHUP or
// POLLERR. It must be called inside an access.
func (h *File) hungUp() bool {
	var hup bool
	// Control fails only for a closed descriptor, which an access excludes.
	_ = h.rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(p, 0); err == nil && n > 0 {
			hup = p[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
		}
	})
	return hup
}

// finish ends a call that entered: it classifies err (the kernel's word
// that the device is gone severs the handle; a wake by the sever or Close
// becomes their error) and leaves the access, then severs if needed.
func (h *File) finish(t *sever.Token, err error, eof bool) error {
	kill := false
	switch {
	case err == nil && !eof:
	case h.down.Load() && (err == nil || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed)):
		err = h.downErr()
	case goneErrno(err) || (eof && h.hungUp()):
		kill = true
		err = h.gone
	}
	h.a.Exit(t)
	if kill {
		_ = h.sever(context.Background(), true) // Background: the drain is not cut short
		err = h.downErr()
	}
	return err
}

// Read reads from the device, blocking until data, a deadline
// (SetReadDeadline), the device's going (an error wrapping
// sever.ErrNoDevice, within a few milliseconds of the kernel's or the
// Host's word) or Close (sever.ErrClosed). It returns io.EOF only for an
// end of file that is not a hang-up.
func (h *File) Read(p []byte) (int, error) {
	var t sever.Token
	err := h.enter(&t)
	if err != nil {
		return 0, err
	}
	n, err := h.f.Read(p)
	eof := err == io.EOF
	if err = h.finish(&t, err, eof); err == nil && eof {
		err = io.EOF
	}
	return n, err
}

// Write writes to the device; it blocks, wakes and fails as Read does.
func (h *File) Write(p []byte) (int, error) {
	var t sever.Token
	err := h.enter(&t)
	if err != nil {
		return 0, err
	}
	n, err := h.f.Write(p)
	return n, h.finish(&t, err, false)
}

// Control runs fn with the raw descriptor inside an access, for ioctls
// (TUNSETIFF, TCSETS, GPIO_V2_GET_LINE_IOCTL) and other calls the handle
// does not wrap. fn must not block — the descriptor is non-blocking, and a
// Close waits for fn — and must not keep or close the descriptor. An error
// of fn that says the device is gone severs the handle; Control returns
// fn's error otherwise.
func (h *File) Control(fn func(fd uintptr) error) error {
	var t sever.Token
	err := h.enter(&t)
	if err != nil {
		return err
	}
	var ferr error
	if err := h.rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		ferr = err
	}
	return h.finish(&t, ferr, false)
}

// Poll waits until the device is ready for one of want (sever.EventIn,
// sever.EventOut, sever.EventPri) and returns what it reported, masked to
// want. If the device reports POLLHUP or POLLERR, or the handle severs
// while Poll waits, Poll returns EventErr|EventHup and an error wrapping
// sever.ErrNoDevice; after Close, 0 and sever.ErrClosed; if ctx is done
// first, 0 and ctx's error. want must be a non-zero set of those three
// bits, else Poll returns an error wrapping sever.ErrInvalid at once.
func (h *File) Poll(ctx context.Context, want sever.Events) (sever.Events, error) {
	if want == 0 || want&^(sever.EventIn|sever.EventOut|sever.EventPri) != 0 {
		return 0, fmt.Errorf("hostdev: %s: Poll for %v: %w", h.name, want, sever.ErrInvalid)
	}
	var t sever.Token
	err := h.enter(&t)
	if err != nil {
		if h.closed.Load() {
			return 0, err
		}
		return sever.EventErr | sever.EventHup, err
	}
	fds := []unix.PollFd{{Events: int16(want)}, {Fd: int32(h.wake), Events: unix.POLLIN}}
	if ctx.Done() != nil {
		// ctx can end: an eventfd of this call's own, written when it does.
		cfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			h.a.Exit(&t)
			return 0, fmt.Errorf("hostdev: %s: eventfd: %w", h.name, err)
		}
		// The AfterFunc may already be running when Poll returns: it must
		// not write to cfd's number after Poll closed it (and someone else
		// reused it).
		var cmu sync.Mutex
		cdone := false
		stop := context.AfterFunc(ctx, func() {
			cmu.Lock()
			defer cmu.Unlock()
			if !cdone {
				// An eventfd write fails only if the counter would overflow:
				// then it is readable already, which is all the poll needs.
				_, _ = unix.Write(cfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			}
		})
		defer func() {
			stop()
			cmu.Lock()
			cdone = true
			_ = unix.Close(cfd) // our private eventfd: nothing was written to be lost
			cmu.Unlock()
		}()
		fds = append(fds, unix.PollFd{Fd: int32(cfd), Events: unix.POLLIN})
	}
	var got sever.Events
	var perr error
	// Control fails only for a closed descriptor, which an access excludes.
	_ = h.rc.Control(func(fd uintptr) {
		fds[0].Fd = int32(fd)
		for {
			_, perr = unix.Poll(fds, -1)
			if perr != unix.EINTR {
				return
			}
		}
	})
	hup := fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	switch {
	case perr != nil:
		err = fmt.Errorf("hostdev: %s: poll: %w", h.name, perr)
	case hup:
		err = h.gone
		got = sever.EventErr | sever.EventHup
	case fds[1].Revents != 0:
		err = h.downErr()
		if !h.closed.Load() {
			got = sever.EventErr | sever.EventHup
		}
	case fds[0].Revents != 0:
		got = sever.Events(fds[0].Revents) & want
	default:
		err = ctx.Err()
	}
	h.a.Exit(&t)
	if hup {
		_ = h.sever(context.Background(), true) // Background: the drain is not cut short
		if h.closed.Load() {
			return 0, h.closedErr()
		}
	}
	return got, err
}

// SetReadDeadline, SetWriteDeadline and SetDeadline set the descriptor's
// deadlines as os.File's methods do (a blocked Read or Write returns an
// error wrapping os.ErrDeadlineExceeded when one passes). Once the handle
// is severed or closed they do nothing and return its error: the sever's
// wake-up cannot be undone.
func (h *File) SetReadDeadline(t time.Time) error {
	return h.setDeadline(func() error { return h.f.SetReadDeadline(t) })
}

// SetWriteDeadline: see SetReadDeadline.
func (h *File) SetWriteDeadline(t time.Time) error {
	return h.setDeadline(func() error { return h.f.SetWriteDeadline(t) })
}

// SetDeadline: see SetReadDeadline.
func (h *File) SetDeadline(t time.Time) error {
	return h.setDeadline(func() error { return h.f.SetDeadline(t) })
}

func (h *File) setDeadline(set func() error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down.Load() {
		return h.downErr()
	}
	return set()
}

// OnGone registers fn to run once when the handle severs because the
// device went (not when it is closed first). It runs on the goroutine that
// severed the handle — the Host's event goroutine, or the one whose call
// met the kernel's word — after the calls in flight drained and the
// descriptor was closed, outside any lock and access: it may call Close,
// Read (which returns ErrNoDevice) or anything else, but it should not
// block, since later events of the Host wait for it. If the handle has
// already severed, fn runs at once on the caller's goroutine.
func (h *File) OnGone(fn func()) {
	h.mu.Lock()
	if !h.down.Load() {
		h.onGone = append(h.onGone, fn)
		h.mu.Unlock()
		return
	}
	run := h.byDevice
	h.mu.Unlock()
	<-h.a.Drained()
	if run {
		fn()
	}
}

// Gone returns a channel closed when the handle begins to sever, for the
// device's going or for Close.
func (h *File) Gone() <-chan struct{} { return h.severed }

// Err returns nil while the handle is usable, an error wrapping
// sever.ErrNoDevice once the device went, and one wrapping sever.ErrClosed
// after Close.
func (h *File) Err() error {
	if h.down.Load() {
		return h.downErr()
	}
	return nil
}

// Close closes the handle: calls blocked in it wake with an error wrapping
// sever.ErrClosed (or ErrNoDevice, if the device went first), Close waits
// for them to leave — which they do at once — closes the descriptor if the
// sever has not, and returns. The first Close returns nil (also on a
// severed handle: the shell is closed); later ones return an error
// wrapping sever.ErrClosed. Close may be called from any goroutine and from
// an OnGone callback.
func (h *File) Close() error {
	if h.closed.Swap(true) {
		return h.closedErr()
	}
	_ = h.sever(context.Background(), false) // Background: the drain is not cut short
	if h.unlink != nil {
		h.unlink()
	}
	return nil
}

// sever is the one teardown, by the device's going (byDevice) or Close:
// deny new calls, wake the blocked ones, wait for them to leave, close the
// descriptor once; then, if the device went, run the Gone callbacks.
// Concurrent callers all return after the drain; one runs the callbacks.
func (h *File) sever(ctx context.Context, byDevice bool) error {
	h.mu.Lock()
	first := !h.down.Load()
	var fns []func()
	if first {
		h.byDevice = byDevice
		h.down.Store(true) // 1. deny: enter checks it after its Enter
		close(h.severed)
		// 2. wake: a deadline in the past, which setDeadline can no longer
		// lift, for Read and Write; the eventfd, which stays readable, for
		// Poll. A call that entered before 1 and has not reached its
		// syscall yet finds both set when it does.
		// The descriptor is still open (it closes in step 4): a deadline
		// fails only where the poller does not take it (ErrNoDeadline),
		// and then no Read waits in the poller to be woken; an eventfd
		// write that would overflow finds it readable already.
		_ = h.f.SetDeadline(time.Unix(1, 0))
		_, _ = unix.Write(h.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		if byDevice {
			fns, h.onGone = h.onGone, nil
		}
	}
	h.mu.Unlock()
	err := h.a.Sever(ctx) // 3. drain: every call in flight is awake and leaving
	if err == nil {
		h.release.Do(func() { // 4. the descriptor, exactly once
			h.relErr = h.f.Close()
			_ = unix.Close(h.wake) // our private eventfd: nothing was written to be lost
		})
	}
	for _, fn := range fns { // 5. the device's going, told
		fn()
	}
	return err
}
