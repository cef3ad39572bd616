package fusefs

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/fuse"
	"github.com/sever-dev/sever/kernfs"
)

// stream is what a FUSE open file is served from: an open attribute
// (kernfsStream) or an open char device (cdevStream).
//
// ReadAt and WriteAt run the operation with ctx, the request's: it is
// cancelled when the process is interrupted by a signal (FUSE INTERRUPT)
// or the mount is being closed, and a blocking operation returns then.
// nonblock says the process's file is non-blocking now (O_NONBLOCK, also
// when set after the open). ReadAt returns io.EOF, alone, at the end of
// the data. Poll reports the readiness now without blocking; Wait blocks
// until Poll would report one of want (or an error event), the stream is
// closed or severed, or ctx is done. OnChange registers a callback run once
// on the goroutine of the stream's next change (a Notify, the start of its
// removal, its Close), at once if closed; register, then Poll, to miss
// nothing (kernfs.File.OnChange, chardev.File.OnChange). Close ends the
// open: no method but Poll, Wait and OnChange (which then return at once)
// is called after it. mayBlock
// says a read or write may wait for long, so it must not hold a reader.
type stream interface {
	ReadAt(ctx context.Context, p []byte, off int64, nonblock bool) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64, nonblock bool) (int, error)
	Poll() (sever.Events, error)
	Wait(ctx context.Context, want sever.Events) (sever.Events, error)
	OnChange(fn func()) (cancel func() bool)
	Close() error
	mayBlock() bool
}

// kernfsStream serves an open attribute. The request's context reaches the
// attribute's Show, Store, Read or Write as kernfs.Call.Context. An
// attribute never blocks for lack of data, so nonblock changes nothing, and
// Wait wakes on any Notify, whatever want is.
type kernfsStream struct{ f *kernfs.File }

func (k kernfsStream) ReadAt(ctx context.Context, p []byte, off int64, _ bool) (int, error) {
	return k.f.ReadAtContext(ctx, p, off)
}

func (k kernfsStream) WriteAt(ctx context.Context, p []byte, off int64, _ bool) (int, error) {
	return k.f.WriteAtContext(ctx, p, off)
}

func (k kernfsStream) Poll() (sever.Events, error) { return k.f.Poll() }
func (k kernfsStream) Wait(ctx context.Context, _ sever.Events) (sever.Events, error) {
	return k.f.Wait(ctx)
}
func (k kernfsStream) OnChange(fn func()) func() bool { return k.f.OnChange(fn) }
func (k kernfsStream) Close() error                   { return k.f.Close() }
func (k kernfsStream) mayBlock() bool                 { return false }

// cdevStream serves an open char device. There is no offset: each read and
// write is a request to the driver, passed through byte for byte. A read
// the driver cannot satisfy yet blocks in chardev.File.ReadContext, outside
// the driver, until it calls Notify, the device is unregistered (its
// chosen errno) or ctx is done (EINTR).
type cdevStream struct{ f *chardev.File }

func (c cdevStream) ReadAt(ctx context.Context, p []byte, _ int64, nonblock bool) (int, error) {
	return tryOnce(ctx, nonblock, func(ctx context.Context) (int, error) { return c.f.ReadContext(ctx, p) })
}

func (c cdevStream) WriteAt(ctx context.Context, p []byte, _ int64, nonblock bool) (int, error) {
	return tryOnce(ctx, nonblock, func(ctx context.Context) (int, error) { return c.f.WriteContext(ctx, p) })
}

func (c cdevStream) Poll() (sever.Events, error) { return c.f.Poll() }
func (c cdevStream) Wait(ctx context.Context, want sever.Events) (sever.Events, error) {
	return c.f.Wait(ctx, want)
}
func (c cdevStream) OnChange(fn func()) func() bool { return c.f.OnChange(fn) }
func (c cdevStream) Close() error                   { return c.f.Close() }
func (c cdevStream) mayBlock() bool                 { return true }

// tryOnce runs a blocking chardev operation; for a non-blocking request on
// a file the char device was opened blocking (the process set O_NONBLOCK
// after its open) it gives op an already cancelled context, so op tries
// the driver once and, instead of waiting, fails: that failure is EAGAIN.
func tryOnce(ctx context.Context, nonblock bool, op func(context.Context) (int, error)) (int, error) {
	if !nonblock {
		return op(ctx)
	}
	once, cancel := context.WithCancel(ctx)
	cancel()
	n, err := op(once)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.Canceled) {
		return n, sever.ErrWouldBlock
	}
	return n, err
}

// handle is one FUSE open file. Its stream is closed exactly once: by the
// FUSE release, or by Server.Close for a file a process still held when
// the mount went away — whichever takes it out of the mount's table.
//
// Poll wakeups: the kernel asks to be woken (PollIn.WantsWakeup) when a
// poll may find none of the events it waits for. The handle then registers
// a wakeup on the stream (OnChange) before it polls, so a change between
// the two is not missed. The stream's next change — a Notify, the start of
// its removal or unregistration, its close — runs the wakeup on the
// notifier's own goroutine, which writes the kernel's NOTIFY_POLL at once,
// upon which the kernel polls again; no goroutine is woken in between,
// as libfuse's notify_poll is written on the notifying thread. There is at
// most one wakeup registered per handle: the kernel's wakeup handle is per
// open file, and one wakeup wakes all its pollers, whatever events each
// waits for (a wakeup for a change nobody waits for costs the kernel one
// more POLL, which answers not ready and registers again). release
// cancels it.
//
// Lock order: the wakeup runs on whatever goroutine notifies — provider
// code under its own locks (Tree.Notify, Cdev.Notify), a Remove or an
// Unregister under the removal path's — after the wait queue's and the
// scope's locks are released. It takes only h.mu, a leaf (nothing is
// locked while h.mu is held but the wait queue's lock, inside cancel), and
// makes one write(2) to /dev/fuse, which does not wait for the server.
type handle struct {
	m *Server
	s stream

	armMu    sync.Mutex // serializes arm: a second poll waits until the first one's wakeup is registered
	mu       sync.Mutex // guards w and released; a leaf
	w        *wakeup    // the registered wakeup; nil if none
	released bool
}

// wakeup is one registered poll wakeup of a handle. cancel is set, under
// h.mu, once OnChange has returned; shared, under h.mu, when another poll
// found it pending.
type wakeup struct {
	kh     uint64
	cancel func() bool
	shared bool
}

// open opens an attribute as one kernfs.File, or a char device under dev/
// (chardev.Cdev.Open with the open's access mode and O_NONBLOCK) as one
// chardev.File without a file position (pread and pwrite fail with
// ESPIPE); both with direct I/O and without FLUSH at close. A device whose
// unregistration has begun is no longer in dev/: opening a name the
// kernel still held fails with ENOENT.
func (m *Server) open(r *fuse.Request) {
	oin, err := r.Open()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	in := m.inodes.get(r.Node)
	if in == nil {
		r.Reply(syscall.EISDIR) // the root and dev/ are the only inodes not in the table
		return
	}
	var s stream
	flags := fuse.OpenDirectIO | fuse.OpenNoFlush
	if in.c != nil {
		if in.c.Err() != nil {
			r.Reply(syscall.ENOENT)
			return
		}
		flag := accessMode(oin.Flags)
		if oin.Flags&syscall.O_NONBLOCK != 0 {
			flag |= syscall.O_NONBLOCK
		}
		f, err := in.c.Open(flag)
		if err != nil {
			r.Reply(errno(err))
			return
		}
		s = cdevStream{f}
		flags |= fuse.OpenNonSeekable
	} else {
		if in.n.Kind() == kernfs.KindDir {
			r.Reply(syscall.EISDIR)
			return
		}
		f, err := m.src.Sys.OpenNode(in.n, accessMode(oin.Flags))
		if err != nil {
			r.Reply(errno(err))
			return
		}
		s = kernfsStream{f}
	}
	h := &handle{m: m, s: s}
	fh, ok := m.track(h)
	if !ok {
		_ = s.Close() // the open is refused: ENODEV is what the caller sees
		r.Reply(syscall.ENODEV)
		return
	}
	r.ReplyOpen(fh, flags)
}

// track records an open handle and returns its number; it refuses once
// Close has begun.
func (m *Server) track(h *handle) (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, false
	}
	m.nextFH++
	m.handles[m.nextFH] = h
	return m.nextFH, true
}

// handle returns the open file fh names; if none, it answers r EBADF and
// returns nil.
func (m *Server) handle(r *fuse.Request, fh uint64) *handle {
	m.mu.Lock()
	h := m.handles[fh]
	m.mu.Unlock()
	if h == nil {
		r.Reply(syscall.EBADF)
	}
	return h
}

// maxIO bounds the buffer a READ may ask for.
const maxIO = 1 << 20

// read reads at the request's offset. For a text attribute a read at
// offset 0 calls Show; reads further in serve that text. It runs on the
// reader. For a char device the offset is meaningless and the read may
// block, so it runs on a goroutine of its own.
func (m *Server) read(r *fuse.Request) {
	in, err := r.Read()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	h := m.handle(r, in.Handle)
	if h == nil {
		return
	}
	nonblock := in.Flags&syscall.O_NONBLOCK != 0
	size := int(min(in.Size, maxIO))
	if !h.s.mayBlock() {
		h.readInto(r, size, in.Offset, nonblock)
		return
	}
	d := r.Detach()
	go h.readInto(d, size, in.Offset, nonblock)
}

func (h *handle) readInto(r *fuse.Request, size int, off int64, nonblock bool) {
	buf := r.ReadBuffer(size)
	n, err := h.s.ReadAt(r.Context(), buf, off, nonblock)
	if err != nil && !errors.Is(err, io.EOF) && n == 0 {
		r.Reply(errno(err))
		return
	}
	r.ReplyRead(n)
}

// write writes the request's data at its offset; a text attribute takes
// each write as one Store, a char device's driver each write as one
// Write. It runs on a goroutine of its own: a Store may remove nodes and
// wait for the kernel to drop their entries, and a driver's Write may
// block.
func (m *Server) write(r *fuse.Request) {
	in, err := r.Write()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	h := m.handle(r, in.Handle)
	if h == nil {
		return
	}
	d := r.Detach()
	go func() {
		in, _ := d.Write() // the detached copy of what was decoded above
		n, err := h.s.WriteAt(d.Context(), in.Data, in.Offset, in.Flags&syscall.O_NONBLOCK != 0)
		if err != nil && n == 0 {
			d.Reply(errno(err))
			return
		}
		d.ReplyWrite(n)
	}()
}

// poll answers the readiness now and, if the kernel wants a wakeup, makes
// sure one is registered before it polls (a wakeup is wanted on the first
// pass of the process's poll, ready or not). The events pass unchanged:
// sever's Events have Linux's poll bits. A severed file answers
// POLLERR|POLLHUP, not an error.
func (m *Server) poll(r *fuse.Request) {
	in, err := r.Poll()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	h := m.handle(r, in.Handle)
	if h == nil {
		return
	}
	var mine *wakeup
	if in.WantsWakeup {
		mine = h.arm(in.Wakeup) // first, so a change before the Poll below wakes the kernel
	}
	ev, err := h.s.Poll()
	if ev == 0 && err != nil {
		h.disarm(mine)
		r.Reply(errno(err))
		return
	}
	// The kernel reports error events whether asked or not.
	want := sever.Events(in.Events) | sever.EventErr | sever.EventHup
	if ev&want != 0 {
		h.disarm(mine) // ready: this poll will not sleep
	}
	r.ReplyPoll(uint32(ev))
}

// arm makes sure a wakeup is registered for the handle, unless it is
// released, and returns it if this call registered it. When arm returns,
// the registration (this call's or an earlier one still pending) is in the
// stream's wait queue, so every change after it wakes the kernel. A poll
// that finds one pending marks it shared: it may sleep relying on it.
func (h *handle) arm(kh uint64) *wakeup {
	h.armMu.Lock()
	defer h.armMu.Unlock()
	h.mu.Lock()
	if h.released || h.w != nil {
		if h.w != nil {
			h.w.shared = true
		}
		h.mu.Unlock()
		return nil
	}
	me := &wakeup{kh: kh}
	h.w = me
	h.mu.Unlock()
	// Not under h.mu: on a closed stream OnChange runs the wakeup at once,
	// here, and it takes h.mu.
	cancel := h.s.OnChange(func() { h.wake(me) })
	h.mu.Lock()
	keep := h.w == me
	if keep {
		me.cancel = cancel
		h.m.nwatch.Add(1)
	}
	h.mu.Unlock()
	if !keep { // run already, or released meanwhile
		cancel()
		return nil
	}
	return me
}

// wake is the registered wakeup w running, on the notifier's goroutine. It
// takes only h.mu and writes one notification (see handle: lock order).
func (h *handle) wake(w *wakeup) {
	h.mu.Lock()
	current := h.w == w && !h.released
	if current {
		h.w = nil // before the wakeup: the kernel's re-poll registers a new one
		if w.cancel != nil {
			h.m.nwatch.Add(-1)
		}
	}
	h.mu.Unlock()
	if current {
		// An error means the connection is gone; nobody is left to wake.
		_ = h.m.conn.NotifyPollWakeup(w.kh)
	}
}

// disarm cancels w, the wakeup this poll registered, if it is still the
// handle's and no other poll has found it pending since: that poll — of
// the same file by another thread, perhaps for other events — may be
// asleep relying on it.
func (h *handle) disarm(w *wakeup) {
	if w == nil {
		return
	}
	h.mu.Lock()
	mine := h.w == w && !w.shared
	if mine {
		h.w = nil
		h.m.nwatch.Add(-1)
	}
	h.mu.Unlock()
	if mine {
		w.cancel()
	}
}

// release is the kernel's last close of the open file.
func (m *Server) release(r *fuse.Request) {
	in, err := r.Release()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	m.mu.Lock()
	h := m.handles[in.Handle]
	delete(m.handles, in.Handle)
	m.mu.Unlock()
	if h != nil {
		h.release()
	}
	r.Reply(0)
}

// release cancels the wakeup and closes the stream. The caller took h out
// of the mount's table, so it runs once.
func (h *handle) release() {
	h.mu.Lock()
	h.released = true
	w := h.w
	h.w = nil
	if w != nil && w.cancel != nil {
		h.m.nwatch.Add(-1)
	}
	h.mu.Unlock()
	if w != nil && w.cancel != nil { // without cancel yet, arm cancels it
		w.cancel()
	}
	_ = h.s.Close() // the kernel's release returns nothing; the close is the file's last act
}
