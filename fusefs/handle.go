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
// closed or severed, or ctx is done. Close ends the open: no method but
// Poll and Wait (which then return at once) is called after it. mayBlock
// says a read or write may wait for long, so it must not hold a reader.
type stream interface {
	ReadAt(ctx context.Context, p []byte, off int64, nonblock bool) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64, nonblock bool) (int, error)
	Poll() (sever.Events, error)
	Wait(ctx context.Context, want sever.Events) (sever.Events, error)
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
func (k kernfsStream) Close() error   { return k.f.Close() }
func (k kernfsStream) mayBlock() bool { return false }

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
func (c cdevStream) Close() error   { return c.f.Close() }
func (c cdevStream) mayBlock() bool { return true }

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
// poll finds none of the events it waits for. The handle then runs one
// watcher goroutine that sleeps in the stream's Wait for those events and,
// when it returns — an event, the node or device severed, the file closed
// — sends the kernel the wakeup, upon which the kernel polls again. There
// is at most one watcher per handle (the kernel's wakeup handle is per
// open file, so one wakeup wakes all its pollers): a poll for events the
// running watcher does not wait for replaces it with one waiting for both.
// release stops it, and Server.Close waits for every watcher.
type handle struct {
	m *Server
	s stream

	mu       sync.Mutex
	w        *watcher // the running watcher; nil if none
	released bool
}

// watcher is one running poll watcher of a handle.
type watcher struct {
	want sever.Events
	stop context.CancelFunc
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

// poll answers the readiness now and, if none of the events the kernel
// waits for is ready and it wants a wakeup, starts the watcher. The events
// pass unchanged: sever's Events have Linux's poll bits. A severed file
// answers POLLERR|POLLHUP, not an error.
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
	ev, err := h.s.Poll()
	if ev == 0 && err != nil {
		r.Reply(errno(err))
		return
	}
	// The kernel reports error events whether asked or not.
	want := sever.Events(in.Events) | sever.EventErr | sever.EventHup
	if ev&want == 0 && in.WantsWakeup {
		h.watch(in.Wakeup, want)
	}
	r.ReplyPoll(uint32(ev))
}

// watch makes sure a watcher waits for want, unless the handle is
// released. It is called only from a request handler, so never after
// Server.Close began waiting for watchers (the readers, which run the
// handlers, have returned by then).
func (h *handle) watch(kh uint64, want sever.Events) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return
	}
	if old := h.w; old != nil {
		if want&^old.want == 0 {
			return // the running watcher wakes the kernel for these too
		}
		want |= old.want
		old.stop()
	}
	ctx, cancel := context.WithCancel(h.m.ctx)
	me := &watcher{want: want, stop: cancel}
	h.w = me
	h.m.watchers.Add(1)
	h.m.nwatch.Add(1)
	go func() {
		defer h.m.watchers.Done()
		defer h.m.nwatch.Add(-1)
		defer cancel()
		// Either way the kernel re-polls: an error (a severed file) is
		// news its next poll reads.
		_, _ = h.s.Wait(ctx, want)
		h.mu.Lock()
		replaced := h.w != me
		if !replaced {
			h.w = nil // before the wakeup: the kernel's re-poll may need a new watcher
		}
		released := h.released
		h.mu.Unlock()
		if ctx.Err() != nil || released || replaced {
			return
		}
		// An error means the connection is gone; nobody is left to wake.
		_ = h.m.conn.NotifyPollWakeup(kh)
	}()
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

// release stops the watcher and closes the stream. The caller took h out
// of the mount's table, so it runs once.
func (h *handle) release() {
	h.mu.Lock()
	h.released = true
	w := h.w
	h.w = nil
	h.mu.Unlock()
	if w != nil {
		w.stop()
	}
	_ = h.s.Close() // the kernel's release returns nothing; the close is the file's last act
}
