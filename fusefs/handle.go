package fusefs

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"

	"bazil.org/fuse"
	bfs "bazil.org/fuse/fs"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
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
// Poll and Wait (which then return at once) is called after it.
type stream interface {
	ReadAt(ctx context.Context, p []byte, off int64, nonblock bool) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64, nonblock bool) (int, error)
	Poll() (sever.Events, error)
	Wait(ctx context.Context, want sever.Events) (sever.Events, error)
	Close() error
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
func (k kernfsStream) Close() error { return k.f.Close() }

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
func (c cdevStream) Close() error { return c.f.Close() }

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
// Poll wakeups: the kernel asks to be woken (PollRequest.Wakeup) when a
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

var (
	_ bfs.HandleReader   = (*handle)(nil)
	_ bfs.HandleWriter   = (*handle)(nil)
	_ bfs.HandlePoller   = (*handle)(nil)
	_ bfs.HandleReleaser = (*handle)(nil)
	_ bfs.HandleFlusher  = (*handle)(nil)
)

// Read reads at the request's offset. For a text attribute a read at
// offset 0 calls Show; reads further in serve that text. For a char device
// the offset is meaningless and the read may block.
func (h *handle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	ctx, done := h.m.requestContext(ctx)
	defer done()
	buf := resp.Data[:req.Size]
	n, err := h.s.ReadAt(ctx, buf, req.Offset, req.FileFlags&fuse.OpenNonblock != 0)
	if err != nil && !errors.Is(err, io.EOF) && n == 0 {
		return errno(err)
	}
	resp.Data = buf[:n]
	return nil
}

// Write writes the request's data at its offset; a text attribute takes
// each write as one Store, a char device's driver each write as one Write.
func (h *handle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	ctx, done := h.m.requestContext(ctx)
	defer done()
	n, err := h.s.WriteAt(ctx, req.Data, req.Offset, req.FileFlags&fuse.OpenNonblock != 0)
	if err != nil && n == 0 {
		return errno(err)
	}
	resp.Size = n
	return nil
}

// Poll answers the readiness now and, if none of the events the kernel
// waits for is ready and it wants a wakeup, starts the watcher. The events
// pass unchanged: sever's Events have Linux's poll bits. A severed file
// answers POLLERR|POLLHUP, not an error.
func (h *handle) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	ev, err := h.s.Poll()
	if ev == 0 && err != nil {
		return errno(err)
	}
	resp.REvents = fuse.PollEvents(ev)
	// The kernel reports error events whether asked or not.
	want := sever.Events(req.Events) | sever.EventErr | sever.EventHup
	if ev&want == 0 {
		if w, ok := req.Wakeup(); ok {
			h.watch(w, want)
		}
	}
	return nil
}

// watch makes sure a watcher waits for want, unless the handle is
// released. It is called only from a request handler, so never after
// Server.Close began waiting for watchers (the serve loop, which waits for
// its handlers, has returned by then).
func (h *handle) watch(w fuse.PollWakeup, want sever.Events) {
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
		h.s.Wait(ctx, want)
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
		_ = h.m.srv.NotifyPollWakeup(w)
	}()
}

// Flush answers ENOSYS, which tells the kernel never to send FLUSH on this
// mount again: there is nothing to flush (as on sysfs), and every close(2)
// would otherwise cost a round trip.
func (h *handle) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	return syscall.ENOSYS
}

// Release is the kernel's last close of the open file.
func (h *handle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	if h.m.untrack(h) {
		h.release()
	}
	return nil
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
	h.s.Close()
}
