// Package fusefs serves a machine's sys/ (a kernfs.Tree) and dev/ (a
// chardev.Registry) as a real file system through FUSE, so that ordinary
// processes — cat, a shell's echo, a poll loop — see the same lifetimes a
// Go caller does: ENODEV on a file whose node or device was severed (EIO
// for a uio-like device, whatever errno the char device chose), ENOENT on
// a removed path, POLLERR|POLLHUP for a poller whose node or device went
// away.
//
// The adapter is thin; the semantics live in kernfs and chardev. Every
// FUSE open is one kernfs.File or chardev.File, closed at the FUSE release
// (or, for files a process still holds when the mount is closed, by
// Close). Every failing request is answered with sever.Errno of the error.
// Files are opened with direct I/O, so each read reaches the provider: a
// read of an attribute at offset 0 shows fresh content, as in sysfs.
//
// The server's side:
//
//	m, err := fusefs.Mount("/run/sever", fusefs.Sources{Sys: tree, Dev: chardev.RegistryOf(core)})
//	...
//	m.Close() // unmounts, even while processes hold files open
//
// A process's side is any program: `cat /run/sever/sys/class/gpio/gpiochip0/value`.
//
// sys/ is the tree. dev/ lists the registry's char devices (Names), each a
// regular file of mode 0660 — not a character special file, which the
// kernel would open as the real device of that number. A dev file has no
// position (pread fails with ESPIPE); its read is the driver's Read
// (chardev.File.ReadContext), which blocks until the driver has data, its
// write the driver's Write, byte for byte. FUSE cannot carry a driver's
// ioctls, so a device meant for processes on the mount speaks a text
// protocol through Read and Write instead (writing `request 3 both` to a
// GPIO chip and reading event lines, say): that protocol is the driver's
// business, not this package's, which passes bytes through.
//
// Interrupts: a process blocked in a read or write — a char device with
// no data, a Show that waits — is woken by a signal. The kernel sends
// FUSE's INTERRUPT; the request's context, which reaches the provider as
// kernfs.Call.Context or chardev's ReadContext/WriteContext, is cancelled,
// and the process sees EINTR (or dies, if the signal kills it) instead of
// hanging in the kernel. Close cancels the requests in flight likewise.
//
// Poll: a process sleeping in poll(2) on a file is woken when the file's
// wait queue is — for an attribute, Notify (POLLPRI|POLLERR, as
// sysfs_notify); for a char device, the driver's Cdev.Notify when one of
// the polled events becomes ready; for both, removal (POLLERR|POLLHUP) —
// through a watcher goroutine per polled open file that sends the kernel
// FUSE's poll wakeup.
//
// Caches: the kernel keeps directory entries for the mount's entry
// validity (EntryTimeout) and attributes, which never change for a node,
// for an hour. A removed kernfs node's entry is invalidated as soon as it
// stops resolving (kernfs.Tree.OnRemove), a char device's as soon as its
// unregistration begins, so a removed path fails with ENOENT at once.
//
// A process using the mount must not be the serving process itself: its
// request waits on a server that runs in the same process, which can
// deadlock. Tests drive the mount with separate processes.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"bazil.org/fuse"
	bfs "bazil.org/fuse/fs"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/internal/mutation"
	"github.com/sever-dev/sever/kernfs"
)

// Sources are what a mount serves: Sys as sys/, Dev as dev/. Either may be
// nil, and its directory is then absent.
type Sources struct {
	Sys *kernfs.Tree
	Dev *chardev.Registry
}

// An Option configures Mount.
type Option func(*config)

type config struct {
	entryValid time.Duration
	allowOther bool
	logf       func(format string, args ...any)
	debug      func(msg any)
}

// AllowOther lets users other than the one who mounted access the file
// system (FUSE's allow_other; for a non-root mounter it needs
// user_allow_other in /etc/fuse.conf). Without it only the mounting user
// may enter the mount; the kernel refuses everyone else, root included.
func AllowOther() Option { return func(c *config) { c.allowOther = true } }

// Logf sets where Mount and Close report what they did besides their
// result: the recovery of a stale mount, a forced unmount. The default is
// log.Printf; a nil f discards the reports.
func Logf(f func(format string, args ...any)) Option {
	if f == nil {
		f = func(string, ...any) {}
	}
	return func(c *config) { c.logf = f }
}

// DefaultEntryTimeout is how long the kernel may cache a directory entry
// unless EntryTimeout says otherwise.
const DefaultEntryTimeout = time.Minute

// EntryTimeout sets how long the kernel may keep a directory entry — a
// name resolved to a node — without asking the server again (default
// DefaultEntryTimeout). Removals invalidate the entries they concern at
// once, so this bounds only how long an entry could outlive a missed
// invalidation; 0 caches nothing, and every path walk asks the server for
// each component.
func EntryTimeout(d time.Duration) Option {
	return func(c *config) { c.entryValid = max(d, 0) }
}

// Debug traces every FUSE request and response to f (bazil.org/fuse's
// debug messages). It is for diagnosing; it is slow.
func Debug(f func(msg any)) Option { return func(c *config) { c.debug = f } }

// Server is a machine's sys/ and dev/ served on a directory. Its states:
//
//	serving ──Close──▶ closing ──serve loop returned, files closed──▶ closed
//
// serving: a serve loop answers FUSE requests. closing: the directory is
// being unmounted; requests in flight are cancelled, new ones still
// answered until the kernel drops the connection. closed: the serve loop
// and every watcher have returned, no invalidation is being sent, and
// every file opened through the mount has been closed — by its FUSE
// release, or by Close for those a process still held.
type Server struct {
	dir  string
	src  Sources
	cfg  config
	uid  uint32 // owner reported for every node: the serving process's
	gid  uint32
	conn *fuse.Conn
	srv  *bfs.Server

	// ctx is cancelled by Close after the serve loop returned: it stops
	// every watcher.
	ctx    context.Context
	cancel context.CancelFunc
	// reqs is cancelled by Close once it has unmounted: requests in
	// flight, which the serve loop waits for, stop waiting.
	reqs       context.Context
	cancelReqs context.CancelFunc

	unhook func() // takes the invalidation hook off the tree

	// notifyMu is held shared while an invalidation is sent and
	// exclusively by Close to stop them, before the connection's file is
	// closed (a notification must not be written to a reused descriptor).
	notifyMu  sync.RWMutex
	notifyOff bool

	served   chan struct{} // closed when the serve loop returns
	serveErr error         // valid after served is closed

	mu      sync.Mutex
	handles map[*handle]struct{}       // files opened and not yet released
	cdevs   map[*chardev.Cdev]struct{} // char devices whose unregistration a watcher awaits
	closed  bool                       // Close has begun: no new handle is tracked

	watchers sync.WaitGroup // poll and char device watcher goroutines
	nwatch   atomic.Int32   // how many poll watchers are running, for tests
	nlookup  atomic.Int64   // lookups below sys/ and dev/, for tests

	closeOnce sync.Once
	closeErr  error
}

// Mount mounts src on dir, an existing directory, and serves it until
// Close: src.Sys as dir/sys, src.Dev as dir/dev.
// It mounts through fusermount3 (the setuid helper from the fuse3 package,
// looked up in PATH), so it works for root and, where /etc/fuse.conf
// allows, other users. The mount uses default_permissions: the kernel
// checks the nodes' mode bits. It is not visible to other users unless
// AllowOther is given.
//
// If dir is a stale FUSE mount left by a process that died without
// unmounting (stat fails with ENOTCONN), Mount first lazily unmounts it
// and reports that through Logf. Mount fails if /dev/fuse is missing or
// mounting is not permitted; the error then wraps the helper's complaint.
func Mount(dir string, src Sources, opts ...Option) (*Server, error) {
	cfg := config{logf: log.Printf, entryValid: DefaultEntryTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fusefs: %s: %w", dir, err)
	}
	if stale, err := Unstale(abs); err != nil {
		return nil, err
	} else if stale {
		cfg.logf("fusefs: %s: unmounted a stale FUSE mount left by an earlier run", abs)
	}
	mopts := []fuse.MountOption{
		fuse.FSName("sever"),
		fuse.Subtype("sever"),
		fuse.DefaultPermissions(),
	}
	if cfg.allowOther {
		mopts = append(mopts, fuse.AllowOther())
	}
	conn, err := fuse.Mount(abs, mopts...)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount %s: %w", abs, err)
	}
	m := &Server{
		dir:     abs,
		src:     src,
		cfg:     cfg,
		uid:     uint32(os.Getuid()),
		gid:     uint32(os.Getgid()),
		conn:    conn,
		served:  make(chan struct{}),
		handles: make(map[*handle]struct{}),
		cdevs:   make(map[*chardev.Cdev]struct{}),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.reqs, m.cancelReqs = context.WithCancel(context.Background())
	fc := &bfs.Config{}
	if cfg.debug != nil {
		fc.Debug = cfg.debug
	}
	m.srv = bfs.New(conn, fc)
	if src.Sys != nil {
		m.unhook = src.Sys.OnRemove(m.forget)
	}
	go func() {
		defer close(m.served)
		m.serveErr = m.srv.Serve(root{m})
	}()
	return m, nil
}

// Dir returns the absolute path of the mount point.
func (m *Server) Dir() string { return m.dir }

// Close unmounts the file system and returns when the serve loop has
// returned, every watcher has stopped and every file opened through the
// mount is closed (so every per-open Release has run).
//
// It first tries a clean unmount. If the mount is busy — a process holds
// a file open, or sits in a directory of it — Close forces it: as root it
// aborts the FUSE connection and detaches the mount (umount2 with
// MNT_FORCE|MNT_DETACH), so the processes' descriptors turn into ones
// that fail with ENOTCONN, and Close closes the kernfs files they held.
// Without the privilege to abort, it detaches the mount lazily
// (fusermount3 -u -z) and returns only once those processes have closed
// their files. Requests in flight when the unmount is done have their
// context cancelled: a read blocked in a char device or a Show that honours
// its context returns (EINTR). Closing an already closed Server returns the
// first Close's result. If a provider callback blocks forever regardless
// of its context, so does Close: the serve loop waits for the request in
// flight.
func (m *Server) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Server) close() error {
	var errs []error
	select {
	case <-m.served: // unmounted from outside; nothing to unmount
	default:
		if err := m.unmount(); err != nil {
			errs = append(errs, err)
		}
	}
	m.cancelReqs()
	<-m.served
	if m.serveErr != nil {
		errs = append(errs, fmt.Errorf("fusefs: %s: serve: %w", m.dir, m.serveErr))
	}
	// The kernel will send no more requests: stop the invalidations and
	// the watchers, then close what no release reached.
	if m.unhook != nil {
		m.unhook()
	}
	m.notifyMu.Lock()
	m.notifyOff = true
	m.notifyMu.Unlock()
	m.cancel()
	m.watchers.Wait()
	m.mu.Lock()
	m.closed = true
	left := make([]*handle, 0, len(m.handles))
	for h := range m.handles {
		left = append(left, h)
	}
	clear(m.handles)
	m.mu.Unlock()
	for _, h := range left {
		h.release()
	}
	if err := m.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("fusefs: %s: close connection: %w", m.dir, err))
	}
	return errors.Join(errs...)
}

// unmount unmounts m.dir: cleanly if it can, else by force (see Close).
func (m *Server) unmount() error {
	out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput()
	if err == nil {
		return nil
	}
	if !strings.Contains(string(out), "busy") {
		return fmt.Errorf("fusefs: unmount %s: %v: %s", m.dir, err, strings.TrimSpace(string(out)))
	}
	// Busy. Abort the connection, which also fails the requests in
	// flight, and detach the mount; needs CAP_SYS_ADMIN.
	if err := syscall.Unmount(m.dir, syscall.MNT_FORCE|syscall.MNT_DETACH); err == nil {
		m.cfg.logf("fusefs: %s: busy; aborted the connection and detached the mount", m.dir)
		return nil
	}
	if out, err := exec.Command("fusermount3", "-u", "-z", m.dir).CombinedOutput(); err != nil {
		return fmt.Errorf("fusefs: lazy unmount %s: %v: %s", m.dir, err, strings.TrimSpace(string(out)))
	}
	m.cfg.logf("fusefs: %s: busy; detached the mount, waiting for its open files to be closed", m.dir)
	return nil
}

// Unstale checks whether dir is a stale FUSE mount — one whose server died
// without unmounting, so that stat fails with ENOTCONN — and if so detaches
// it (fusermount3 -u -z) and reports true. It reports false, nil for a
// directory that is not stale, and an error if dir cannot be examined or
// the stale mount cannot be removed. Mount calls it first.
func Unstale(dir string) (bool, error) {
	_, err := os.Stat(dir)
	if err == nil || !errors.Is(err, syscall.ENOTCONN) {
		if err != nil {
			return false, fmt.Errorf("fusefs: %w", err)
		}
		return false, nil
	}
	if out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err != nil {
		return false, fmt.Errorf("fusefs: %s is a stale FUSE mount and unmounting it failed: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	if _, err := os.Stat(dir); err != nil {
		return true, fmt.Errorf("fusefs: %s: still unusable after unmounting a stale FUSE mount: %w", dir, err)
	}
	return true, nil
}

// track records an open handle; it refuses once Close has begun.
func (m *Server) track(h *handle) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.handles[h] = struct{}{}
	return true
}

// untrack forgets h and reports whether it was tracked, so exactly one of
// the FUSE release and Close closes it.
func (m *Server) untrack(h *handle) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.handles[h]; !ok {
		return false
	}
	delete(m.handles, h)
	return true
}

// requestContext returns ctx, the context of a request, cancelled also
// when Close has unmounted, and the function that releases it.
func (m *Server) requestContext(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.reqs, cancel)
	return ctx, func() { stop(); cancel() }
}

// forget is the tree's OnRemove hook: the node no longer resolves, so the
// kernel must forget its entry.
func (m *Server) forget(n *kernfs.Node) {
	if mutation.SkipInvalidation { // a planted bug: see package internal/mutation
		return
	}
	if p := n.Parent(); p != nil {
		m.invalidate(node{m, p}, n.Name())
	}
}

// invalidate tells the kernel to drop its entry name in dir, if it has
// one, so that the next path walk asks Lookup. It is synchronous: when it
// returns, the entry is gone. The kernel holds the directory's lock while
// it does it, so an invalidation that races a lookup in dir waits for the
// lookup's reply and removes what it cached. Nothing the mount does while
// holding that lock (a lookup, a listing) waits for a removal, so this
// cannot deadlock with the removal that calls it.
func (m *Server) invalidate(dir bfs.Node, name string) {
	m.notifyMu.RLock()
	defer m.notifyMu.RUnlock()
	if m.notifyOff {
		return
	}
	// ErrNotCached: the kernel does not know dir or the entry; any
	// other error means the connection is going away. Nothing to do.
	_ = m.srv.InvalidateEntry(dir, name)
}

// errno is the answer to a failed request: the errno err means.
func errno(err error) error {
	return fuse.Errno(sever.Errno(err))
}
