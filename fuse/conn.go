// Package fuse speaks the Linux FUSE kernel protocol (linux/fuse.h): it
// mounts a file system, reads the kernel's requests and writes the
// replies and notifications — only the messages sever's file systems use
// (see Opcode). It knows nothing of nodes or files: a Handler gets each
// Request, decodes its body with the Request's methods and replies once.
//
// Requests are served on the goroutine that read them, so a request costs
// no goroutine and no hand-off between threads. The reader waits in the
// runtime's poller, holding no thread; a second reader is started only
// when a request is served for longer than 500µs and nobody else reads,
// so a handler that blocks never leaves the kernel without a reader (with
// MountOptions.Blocking the readers instead block in read(2), each on its
// own clone of the descriptor, FUSE_DEV_IOC_CLONE, as libfuse's threads
// do). A handler that must wait for long — a read that waits for data —
// calls Request.Detach and replies later from a goroutine of its own.
//
// The server's side:
//
//	c, err := fuse.Mount(dir, fuse.MountOptions{FSName: "sever"})
//	go c.Serve(handler)  // returns once the file system is unmounted
//	...
//	c.Unmount(false)     // then c.Close()
//
// Mount calls mount(2) itself when the process may (root, or
// CAP_SYS_ADMIN), so no helper is needed; otherwise it asks fusermount3,
// the setuid helper of the fuse3 package.
package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// ErrClosed is returned by a notification sent after Close.
var ErrClosed = errors.New("fuse: connection closed")

// Conn is one mounted FUSE file system: the kernel's connection to its
// server. Its states:
//
//	mounted ──Serve──▶ serving ──unmounted or aborted──▶ ended ──Close──▶ closed
//
// Serve answers requests until the kernel ends the connection (an
// unmount, an abort); Close then cancels the requests still in flight,
// waits for the detached ones to reply and closes the descriptors. A Conn
// is safe for concurrent use: notifications may be sent from any
// goroutine while Serve runs.
type Conn struct {
	dir      string
	fd       int      // the /dev/fuse descriptor mount(2) was given
	file     *os.File // fd, non-blocking, through the runtime's poller; nil when readers block in read(2) on clones
	helper   bool
	minor    uint32
	maxWrite int
	readers  int

	fdMu   sync.RWMutex // held shared while fd or a clone is written; exclusively to close them
	closed bool
	clones []int

	mu       sync.Mutex
	inflight map[uint64]*Request // requests whose Context was asked for, by Unique
	ending   bool                // Close began: new contexts start cancelled
	detached sync.WaitGroup

	served  chan struct{}
	served1 atomic.Bool

	// Readers.
	h        Handler
	rwg      sync.WaitGroup
	rmu      sync.Mutex
	nreaders int   // readers running
	nidle    int   // of which waiting in read(2)
	spare    []int // clone descriptors no reader uses now
	rerr     error // the first error that stopped a reader
}

// Handler serves requests. Serve calls it on the goroutine that read r,
// for every request but INIT, INTERRUPT and DESTROY, which the Conn
// answers itself. It must reply to r exactly once (Request.Reply and the
// Reply… methods) before it returns — except for FORGET and BATCH_FORGET,
// which take no reply, and a request it detached, whose reply it sends
// later. r and every slice decoded from it are valid only until the
// handler returns (a detached request's until its reply).
type Handler interface {
	Serve(r *Request)
}

// HandlerFunc is a function as a Handler.
type HandlerFunc func(r *Request)

// Serve calls f(r).
func (f HandlerFunc) Serve(r *Request) { f(r) }

// Dir returns the mount point.
func (c *Conn) Dir() string { return c.dir }

// Serve reads and serves requests until the connection ends (the file
// system was unmounted or the connection aborted); it then returns nil, or
// the error that stopped a reader. It starts MountOptions.Readers readers
// (default 1). A reader serves the request it read before it reads again;
// if that takes longer than takeoverAfter — a handler that blocks — and no
// other reader is reading, another is started (up to maxReaders), so the
// kernel is never left without a reader, and a reader that finishes while
// Readers others are reading stops. Serve returns when all have stopped.
// Call it once.
func (c *Conn) Serve(h Handler) error {
	if c.served1.Swap(true) {
		panic("fuse: Serve called twice on one connection")
	}
	defer close(c.served)
	c.h = h
	c.rmu.Lock()
	c.nreaders, c.nidle = c.readers, c.readers
	c.rmu.Unlock()
	c.rwg.Add(c.readers)
	for i := 1; i < c.readers; i++ {
		go c.read(c.readerFD())
	}
	c.read(c.fd)
	c.rwg.Wait()
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.rerr
}

// maxReaders bounds the readers Serve runs at once.
const maxReaders = 64

// takeoverAfter is how long a reader may serve one request before another
// reader is started to read in its place. Starting one for every request
// instead — a goroutine, and on a shared descriptor a hand-off of the read
// at every request — costs more than the round trip it would save.
const takeoverAfter = 500 * time.Microsecond

// watch is a reader's watchdog state, guarded by Conn.rmu.
//
// Re-arming a timer for every request cost a wake-up of the runtime's
// poller each time (6% of a server's CPU), so the timer is armed only
// when a request starts and none is armed; when it fires it looks at the
// request in progress: one older than takeoverAfter gets another reader,
// a younger one a timer for the rest of its time, and an idle reader none.
type watch struct {
	busy  bool      // serving a request
	since time.Time // when that request was read
	armed bool      // the timer will fire
	timer *time.Timer
}

// takeover is a reader's timer firing: see watch.
func (c *Conn) takeover(w *watch) {
	c.rmu.Lock()
	spawn := false
	switch {
	case !w.busy:
		w.armed = false
	case time.Since(w.since) < takeoverAfter:
		w.timer.Reset(takeoverAfter - time.Since(w.since))
	default:
		w.armed = false
		spawn = c.nidle == 0 && c.nreaders < maxReaders
		if spawn {
			c.nreaders++
			c.nidle++
			c.rwg.Add(1)
		}
	}
	c.rmu.Unlock()
	if spawn {
		go c.read(c.readerFD())
	}
}

// readerFD returns a descriptor for a new reader: one an ended reader left,
// or a new clone, or the connection's own if cloning fails (an old
// kernel: readers then share it).
func (c *Conn) readerFD() int {
	if c.file != nil {
		return c.fd // the readers take turns on the one descriptor
	}
	c.rmu.Lock()
	if n := len(c.spare); n > 0 {
		fd := c.spare[n-1]
		c.spare = c.spare[:n-1]
		c.rmu.Unlock()
		return fd
	}
	c.rmu.Unlock()
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.closed {
		return c.fd
	}
	fd, err := cloneFD(c.fd)
	if err != nil {
		return c.fd
	}
	c.clones = append(c.clones, fd)
	return fd
}

// cloneFD opens /dev/fuse again and attaches it to fd's connection, so
// that it reads its own share of the requests.
func cloneFD(fd int) (int, error) {
	nfd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	src := uint32(fd)
	const fuseDevIocClone = 0x8004e500 // _IOR(229, 0, uint32_t)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(nfd), fuseDevIocClone, uintptr(unsafe.Pointer(&src))); e != 0 {
		_ = syscall.Close(nfd) // a fresh descriptor nothing used: the ioctl error is the news
		return -1, e
	}
	return nfd, nil
}

// bufSize is the read buffer a reader needs: the largest WRITE and its
// headers.
func (c *Conn) bufSize() int { return max(c.maxWrite+pageSize, minReadBuffer) }

// read is one reader: it reads requests from fd and serves each before
// reading the next. A request's reply goes to the descriptor it was read
// from, so a descriptor stays open until Close even when its reader ends
// (detached requests may still reply on it); the next reader reuses it.
func (c *Conn) read(fd int) {
	defer c.rwg.Done()
	buf := make([]byte, c.bufSize())
	r := &Request{c: c, fd: fd, out: make([]byte, outHeaderSize+c.maxWrite)}
	var forgets []Forget
	w := &watch{}
	w.timer = time.AfterFunc(time.Hour, func() { c.takeover(w) })
	w.timer.Stop()
	defer w.timer.Stop()
	for {
		n, err := c.readOne(fd, buf)
		switch {
		case err == nil && n > 0:
		case err == syscall.EINTR || err == syscall.EAGAIN || err == syscall.ENOENT:
			// ENOENT: the request was interrupted before we read it.
			continue
		case err == syscall.ENODEV || err == nil:
			// Unmounted or aborted. (/dev/fuse never reads 0 bytes; a
			// socket standing in for it in tests does at its end.)
			c.readerEnds(fd, nil)
			return
		default:
			c.readerEnds(fd, fmt.Errorf("fuse: %s: read: %w", c.dir, err))
			return
		}
		hd, body, perr := parseHeader(buf[:n])
		if perr != nil {
			if n >= inHeaderSize && hd.Unique != 0 {
				r.reset(hd, nil)
				r.Reply(syscall.EIO)
			}
			continue
		}
		r.reset(hd, body)
		switch hd.Opcode {
		case OpInterrupt:
			c.interrupt(r)
			continue
		case OpDestroy:
			r.Reply(0)
			continue
		case OpInit:
			r.Reply(syscall.EPROTO) // Mount answered the one INIT
			continue
		case OpForget, OpBatchForget:
			forgets, _ = parseForgets(hd.Opcode, hd.Node, body, forgets[:0])
			r.forgets = forgets
		}
		c.rmu.Lock()
		c.nidle--
		w.busy, w.since = true, time.Now()
		if !w.armed {
			w.armed = true
			w.timer.Reset(takeoverAfter)
		}
		c.rmu.Unlock()
		c.serve(r)
		c.rmu.Lock()
		w.busy = false
		if c.nidle >= c.readers {
			c.nreaders--
			c.spare = append(c.spare, fd)
			c.rmu.Unlock()
			return
		}
		c.nidle++
		c.rmu.Unlock()
	}
}

// readOne reads one request from fd: through the runtime's poller when
// the connection uses it (the goroutine then parks instead of holding a
// thread, and the readers take turns on the one descriptor), else with a
// blocking read(2).
func (c *Conn) readOne(fd int, buf []byte) (int, error) {
	if c.file == nil {
		return syscall.Read(fd, buf)
	}
	n, err := c.file.Read(buf)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, os.ErrClosed) || err == io.EOF {
		return 0, syscall.ENODEV
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return 0, e
	}
	// The poller saw an error event (EPOLLERR: the connection was
	// aborted or unmounted) and says so without an errno: ask read(2).
	return syscall.Read(fd, buf)
}

// readerEnds records that a reader stopped because the connection ended
// (err nil) or failed.
func (c *Conn) readerEnds(fd int, err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.nreaders--
	c.nidle--
	if fd != c.fd {
		c.spare = append(c.spare, fd)
	}
	if err != nil && c.rerr == nil {
		c.rerr = err
	}
}

// serve runs the handler; a panic in it is answered EIO, not carried into
// the reader.
func (c *Conn) serve(r *Request) {
	defer func() {
		if p := recover(); p != nil {
			if !r.replied && !r.detached && !r.noReply() {
				r.Reply(syscall.EIO)
			}
			fmt.Fprintf(os.Stderr, "fuse: %s: handler panicked serving %v: %v\n", c.dir, r.Opcode, p)
		}
	}()
	c.h.Serve(r)
}

// interrupt cancels the request INTERRUPT names. If it is not (yet) known
// — its handler has not asked for its context, or has replied — the
// kernel is told to try again later (EAGAIN); it stops trying once the
// request is answered.
func (c *Conn) interrupt(r *Request) {
	u, err := parseInterrupt(r.body)
	if err != nil {
		return
	}
	c.mu.Lock()
	t := c.inflight[u]
	c.mu.Unlock()
	if t != nil {
		t.cancel(context.Canceled)
		return
	}
	r.Reply(syscall.EAGAIN)
}

// Close ends the connection's life after Serve returned (or was never
// called): it cancels every request in flight, waits until the detached
// ones have replied and closes the descriptors. A request's reply after
// Close is dropped. Calling it again does nothing.
func (c *Conn) Close() error {
	c.CancelAll()
	c.detached.Wait()
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, fd := range c.clones {
		errs = append(errs, syscall.Close(fd))
	}
	if c.file != nil {
		errs = append(errs, c.file.Close())
	} else {
		errs = append(errs, syscall.Close(c.fd))
	}
	return errors.Join(errs...)
}

// CancelAll cancels the context of every request in flight, as an
// INTERRUPT would, without closing anything: an unmount that waits for
// requests uses it so that blocked ones return.
func (c *Conn) CancelAll() {
	c.mu.Lock()
	c.ending = true
	reqs := make([]*Request, 0, len(c.inflight))
	for _, r := range c.inflight {
		reqs = append(reqs, r)
	}
	c.mu.Unlock()
	for _, r := range reqs {
		r.cancel(ErrClosed)
	}
}

// write sends one message on fd, unless the connection is closed. A
// reply (raw) never sleeps in the kernel — it ends the request and wakes
// its process — so it is written without telling the scheduler a blocking
// call began: that saves the reader handing off its processor and taking
// one back, per request. A notification may wait for a directory's lock,
// so it is an ordinary blocking call.
func (c *Conn) write(fd int, msg []byte, raw bool) error {
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	for {
		var err error
		if raw {
			_, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(msg))), uintptr(len(msg)))
			if e != 0 {
				err = e
			}
		} else {
			_, err = syscall.Write(fd, msg)
		}
		if err != syscall.EINTR {
			return err
		}
	}
}

// notify sends a notification with payload fixed followed by name and a
// NUL if name is not empty.
func (c *Conn) notify(code int32, fixed []byte, name string) error {
	msg := make([]byte, outHeaderSize, outHeaderSize+len(fixed)+len(name)+1)
	msg = append(msg, fixed...)
	if name != "" {
		msg = append(msg, name...)
		msg = append(msg, 0)
	}
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint32(msg[4:], uint32(code))
	le.PutUint64(msg[8:], 0)
	err := c.write(c.fd, msg, false)
	runtime.KeepAlive(msg)
	return err
}

// NotifyPollWakeup wakes the pollers of the open file whose POLL carried
// wakeup (PollIn.Wakeup): the kernel polls it again. It returns an error
// only if the connection is gone.
func (c *Conn) NotifyPollWakeup(wakeup uint64) error {
	var b [8]byte
	le.PutUint64(b[:], wakeup)
	return c.notify(notifyPoll, b[:], "")
}

// InvalidateEntry makes the kernel drop its cached entry name in the
// directory parent, so the next path walk through it sends LOOKUP. It
// returns syscall.ENOENT if the kernel has no such entry or directory. It
// blocks while the kernel holds the directory's lock — for example while a
// LOOKUP in it waits for its reply — so it must not be called from a
// handler the kernel may be waiting on to release that lock.
func (c *Conn) InvalidateEntry(parent uint64, name string) error {
	if name == "" || len(name) > maxNameLen {
		return syscall.EINVAL
	}
	var b [16]byte
	le.PutUint64(b[0:], parent)
	le.PutUint32(b[8:], uint32(len(name)))
	return c.notify(notifyInvalEntry, b[:], name)
}

// InvalidateInode makes the kernel drop its cached attributes of ino and
// the cached data in [off, off+length) (length 0: to the end).
func (c *Conn) InvalidateInode(ino uint64, off, length int64) error {
	var b [24]byte
	le.PutUint64(b[0:], ino)
	le.PutUint64(b[8:], uint64(off))
	le.PutUint64(b[16:], uint64(length))
	return c.notify(notifyInvalInode, b[:], "")
}

// NotifyDelete tells the kernel that the entry name of parent, which
// named child, is gone: like InvalidateEntry, and the child's cached
// inode is marked deleted too.
func (c *Conn) NotifyDelete(parent, child uint64, name string) error {
	if name == "" || len(name) > maxNameLen {
		return syscall.EINVAL
	}
	var b [24]byte
	le.PutUint64(b[0:], parent)
	le.PutUint64(b[8:], child)
	le.PutUint32(b[16:], uint32(len(name)))
	return c.notify(notifyDelete, b[:], name)
}

// Served returns a channel closed when Serve has returned.
func (c *Conn) Served() <-chan struct{} { return c.served }

// Request is one request from the kernel. Decode its body with the method
// of its opcode (Lookup, Read, …) — each fails with syscall.EINVAL on a
// malformed body, which the handler answers with Reply(err) — and answer
// it with one Reply… call. A Request belongs to the reader that read it
// and is reused for its next request once the handler returns, unless the
// handler Detaches it.
type Request struct {
	Header
	c        *Conn
	fd       int
	body     []byte
	out      []byte // the reply buffer: header, then payload
	forgets  []Forget
	replied  bool
	detached bool

	// Context state, for the requests that ask for one.
	cmu        sync.Mutex
	registered bool
	err        error
	done       chan struct{}
}

func (r *Request) reset(h Header, body []byte) {
	r.Header = h
	r.body = body
	r.forgets = nil
	r.replied = false
	r.registered = false
	r.err = nil
	r.done = nil
}

func (r *Request) noReply() bool {
	return r.Opcode == OpForget || r.Opcode == OpBatchForget
}

// Detach lets the handler reply after it returns, from another goroutine:
// it returns a copy of r, with its own copy of the body, and the reader
// moves on to the next request. The copy must be replied to exactly once;
// Conn.Close waits for that.
func (r *Request) Detach() *Request {
	if r.replied || r.detached {
		panic("fuse: Detach of a request already replied to or detached")
	}
	d := &Request{Header: r.Header, c: r.c, fd: r.fd, body: append([]byte(nil), r.body...), detached: true}
	r.replied = true // the reader's copy is done with
	r.c.detached.Add(1)
	if r.registered {
		// The context asked for so far stays r's; the detached request
		// gets its own when asked, which INTERRUPT will find.
		r.c.mu.Lock()
		if r.c.inflight[r.Unique] == r {
			delete(r.c.inflight, r.Unique)
		}
		r.c.mu.Unlock()
		r.registered = false
	}
	return d
}

// Context returns a context cancelled when the kernel interrupts the
// request (the process was signalled) or the connection is closing. It is
// valid until the reply. Only a handler that may block needs it: asking
// registers the request, so INTERRUPT can find it.
func (r *Request) Context() context.Context {
	r.cmu.Lock()
	reg := r.registered
	r.registered = true
	r.cmu.Unlock()
	if !reg {
		r.c.mu.Lock()
		if r.c.inflight == nil {
			r.c.inflight = make(map[uint64]*Request)
		}
		r.c.inflight[r.Unique] = r
		ending := r.c.ending
		r.c.mu.Unlock()
		if ending {
			r.cancel(ErrClosed)
		}
	}
	return (*reqContext)(r)
}

func (r *Request) cancel(err error) {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	if r.err != nil {
		return
	}
	r.err = err
	if r.done != nil {
		close(r.done)
	}
}

// reqContext is a Request as a context.Context, so a request costs no
// context allocation of its own.
type reqContext Request

func (x *reqContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (x *reqContext) Value(any) any               { return nil }
func (x *reqContext) Err() error {
	x.cmu.Lock()
	defer x.cmu.Unlock()
	if x.err == nil {
		return nil
	}
	return context.Canceled
}
func (x *reqContext) Done() <-chan struct{} {
	x.cmu.Lock()
	defer x.cmu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.err != nil {
			close(x.done)
		}
	}
	return x.done
}

// Interrupted reports whether the request's context was cancelled.
func (r *Request) Interrupted() bool {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	return r.err != nil
}

// finish sends the reply held in r.out[:outHeaderSize+n] with errno e.
func (r *Request) finish(e syscall.Errno, n int) {
	if r.replied && !r.detached || r.noReply() {
		panic("fuse: a second reply to request " + itoa(r.Unique) + " (" + r.Opcode.String() + ")")
	}
	if r.detached && r.out == nil {
		panic("fuse: reply to a detached request already answered")
	}
	r.replied = true
	if r.registered {
		r.c.mu.Lock()
		if r.c.inflight[r.Unique] == r {
			delete(r.c.inflight, r.Unique)
		}
		r.c.mu.Unlock()
	}
	msg := r.out[:outHeaderSize+n]
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint32(msg[4:], uint32(-int32(e)))
	le.PutUint64(msg[8:], r.Unique)
	// ENOENT: the request was interrupted and forgotten meanwhile;
	// ENODEV, ErrClosed: the connection is gone. Nobody waits for either.
	_ = r.c.write(r.fd, msg, true)
	if r.detached {
		r.out = nil
		r.c.detached.Done()
	}
}

// payload returns the reply buffer's first n payload bytes.
func (r *Request) payload(n int) []byte {
	if r.detached && r.out == nil && !r.replied {
		r.out = make([]byte, outHeaderSize+n)
	}
	if r.detached && r.out == nil {
		panic("fuse: reply to a detached request already answered")
	}
	if len(r.out) < outHeaderSize+n {
		r.out = make([]byte, outHeaderSize+n)
	}
	return r.out[outHeaderSize : outHeaderSize+n]
}

// Reply answers with errno e alone (0: success with no payload). An errno
// above 4095 or a negative one is sent as EIO.
func (r *Request) Reply(e syscall.Errno) {
	if e > 4095 {
		e = syscall.EIO
	}
	r.payload(0)
	r.finish(e, 0)
}

// Lookup decodes LOOKUP: the name looked up in r.Node.
func (r *Request) Lookup() (string, error) { return name(r.body) }

// Open decodes OPEN and OPENDIR.
func (r *Request) Open() (OpenIn, error) { return parseOpen(r.body) }

// Read decodes READ and READDIR.
func (r *Request) Read() (ReadIn, error) { return parseRead(r.body) }

// Write decodes WRITE; its Data is valid until the reply.
func (r *Request) Write() (WriteIn, error) { return parseWrite(r.body) }

// Release decodes RELEASE and RELEASEDIR.
func (r *Request) Release() (ReleaseIn, error) { return parseRelease(r.body) }

// Poll decodes POLL.
func (r *Request) Poll() (PollIn, error) { return parsePoll(r.body) }

// Setattr decodes SETATTR.
func (r *Request) Setattr() (SetattrIn, error) { return parseSetattr(r.body) }

// Forgets decodes FORGET and BATCH_FORGET: valid until the handler
// returns.
func (r *Request) Forgets() []Forget { return r.forgets }

// Entry is a LOOKUP reply: the inode a name resolves to and how long the
// kernel may cache the name and the attributes.
type Entry struct {
	Node      uint64
	EntryTime time.Duration
	AttrTime  time.Duration
	Attr      Attr
}

func putValid(b []byte, d time.Duration) {
	le.PutUint64(b, uint64(d/time.Second))
}

// ReplyEntry answers LOOKUP.
func (r *Request) ReplyEntry(e *Entry) {
	b := r.payload(entryOutSize)
	le.PutUint64(b[0:], e.Node)
	le.PutUint64(b[8:], 0) // generation: node IDs are never reused
	putValid(b[16:], e.EntryTime)
	putValid(b[24:], e.AttrTime)
	le.PutUint32(b[32:], uint32((e.EntryTime % time.Second).Nanoseconds()))
	le.PutUint32(b[36:], uint32((e.AttrTime % time.Second).Nanoseconds()))
	a := e.Attr
	a.Ino = e.Node
	putAttr(b[40:], &a)
	r.finish(0, entryOutSize)
}

// ReplyAttr answers GETATTR and SETATTR.
func (r *Request) ReplyAttr(a *Attr, valid time.Duration) {
	b := r.payload(attrOutSize)
	putValid(b[0:], valid)
	le.PutUint32(b[8:], uint32((valid % time.Second).Nanoseconds()))
	le.PutUint32(b[12:], 0)
	putAttr(b[16:], a)
	r.finish(0, attrOutSize)
}

// ReplyOpen answers OPEN and OPENDIR with the handle later requests on the
// open file carry, and Open… flags.
func (r *Request) ReplyOpen(handle uint64, flags uint32) {
	b := r.payload(openOutSize)
	le.PutUint64(b[0:], handle)
	le.PutUint32(b[8:], flags)
	le.PutUint32(b[12:], 0)
	r.finish(0, openOutSize)
}

// ReadBuffer returns a buffer of n bytes inside the reply, for a READ or
// READDIR to fill in place; ReplyRead(k) then sends its first k bytes.
func (r *Request) ReadBuffer(n int) []byte { return r.payload(n) }

// ReplyRead answers READ, READDIR or READLINK with the first n bytes of
// the buffer ReadBuffer returned.
func (r *Request) ReplyRead(n int) { r.finish(0, n) }

// ReplyData answers READ, READDIR or READLINK with a copy of p.
func (r *Request) ReplyData(p []byte) {
	copy(r.payload(len(p)), p)
	r.finish(0, len(p))
}

// ReplyWrite answers WRITE: n bytes were written.
func (r *Request) ReplyWrite(n int) {
	b := r.payload(writeOutSize)
	le.PutUint32(b[0:], uint32(n))
	le.PutUint32(b[4:], 0)
	r.finish(0, writeOutSize)
}

// ReplyPoll answers POLL with the ready events.
func (r *Request) ReplyPoll(revents uint32) {
	b := r.payload(pollOutSize)
	le.PutUint32(b[0:], revents)
	le.PutUint32(b[4:], 0)
	r.finish(0, pollOutSize)
}

// ReplyStatfs answers STATFS for a file system with no blocks to count.
func (r *Request) ReplyStatfs(files uint64) {
	b := r.payload(statfsOutSize)
	clear(b)
	le.PutUint64(b[24:], files)
	le.PutUint32(b[40:], pageSize)
	le.PutUint32(b[44:], 255)
	le.PutUint32(b[48:], pageSize)
	r.finish(0, statfsOutSize)
}
