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
	"github.com/sever-dev/sever/kernfs"
)

// stream is what a FUSE open file is served from: a kernfs.File today,
// and the seam where a second source plugs in (an open character device
// under dev/, whose reads block and so honour ctx).
//
// ReadAt returns io.EOF, alone, at the end of the data. Poll reports the
// readiness now without blocking; Wait blocks until Poll would report
// something or the stream is closed or severed, or ctx is done. Close
// ends the open: no method but Poll and Wait (which then return at once)
// is called after it.
type stream interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	Poll() (sever.Events, error)
	Wait(ctx context.Context) (sever.Events, error)
	Close() error
}

// kernfsStream serves an open attribute. kernfs reads and writes take no
// context: an interrupt is honoured only if it arrives before the call
// starts, and a blocking Show or Store runs to its end.
type kernfsStream struct{ f *kernfs.File }

func (k kernfsStream) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return k.f.ReadAt(p, off)
}

func (k kernfsStream) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return k.f.WriteAt(p, off)
}

func (k kernfsStream) Poll() (sever.Events, error)                    { return k.f.Poll() }
func (k kernfsStream) Wait(ctx context.Context) (sever.Events, error) { return k.f.Wait(ctx) }
func (k kernfsStream) Close() error                                   { return k.f.Close() }

// handle is one FUSE open file. Its stream is closed exactly once: by the
// FUSE release, or by Server.Close for a file a process still held when
// the mount went away — whichever takes it out of the mount's table.
//
// Poll wakeups: the kernel asks to be woken (PollRequest.Wakeup) when a
// poll finds nothing ready. The handle then runs one watcher goroutine
// that sleeps in the stream's Wait and, when it returns — a Notify, the
// node severed, the file closed — sends the kernel the wakeup, upon which
// the kernel polls again. There is at most one watcher per handle (the
// kernel's wakeup handle is per open file, so one wakeup wakes all its
// pollers); release stops it, and Server.Close waits for every watcher.
type handle struct {
	m *Server
	s stream

	mu       sync.Mutex
	stop     context.CancelFunc // stops the running watcher; nil if none
	released bool
}

var (
	_ bfs.HandleReader   = (*handle)(nil)
	_ bfs.HandleWriter   = (*handle)(nil)
	_ bfs.HandlePoller   = (*handle)(nil)
	_ bfs.HandleReleaser = (*handle)(nil)
	_ bfs.HandleFlusher  = (*handle)(nil)
)

// Read reads at the request's offset. For a text attribute a read at
// offset 0 calls Show; reads further in serve that text.
func (h *handle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	buf := resp.Data[:req.Size]
	n, err := h.s.ReadAt(ctx, buf, req.Offset)
	if err != nil && !errors.Is(err, io.EOF) && n == 0 {
		return errno(err)
	}
	resp.Data = buf[:n]
	return nil
}

// Write writes the request's data at its offset; a text attribute takes
// each write as one Store.
func (h *handle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	n, err := h.s.WriteAt(ctx, req.Data, req.Offset)
	if err != nil && n == 0 {
		return errno(err)
	}
	resp.Size = n
	return nil
}

// Poll answers the readiness now and, if nothing is ready and the kernel
// wants a wakeup, starts the watcher. The events pass unchanged: sever's
// Events have Linux's poll bits. A severed file answers POLLERR|POLLHUP,
// not an error.
func (h *handle) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	ev, err := h.s.Poll()
	if ev == 0 && err != nil {
		return errno(err)
	}
	resp.REvents = fuse.PollEvents(ev)
	if ev == 0 {
		if w, ok := req.Wakeup(); ok {
			h.watch(w)
		}
	}
	return nil
}

// watch starts the watcher unless one is running or the handle is
// released. It is called only from a request handler, so never after
// Server.Close began waiting for watchers (the serve loop, which waits for
// its handlers, has returned by then).
func (h *handle) watch(w fuse.PollWakeup) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop != nil || h.released {
		return
	}
	ctx, cancel := context.WithCancel(h.m.ctx)
	h.stop = cancel
	h.m.watchers.Add(1)
	h.m.nwatch.Add(1)
	go func() {
		defer h.m.watchers.Done()
		defer h.m.nwatch.Add(-1)
		defer cancel()
		h.s.Wait(ctx)
		h.mu.Lock()
		h.stop = nil // before the wakeup: the kernel's re-poll may need a new watcher
		released := h.released
		h.mu.Unlock()
		if ctx.Err() != nil || released {
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
	stop := h.stop
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
	h.s.Close()
}
