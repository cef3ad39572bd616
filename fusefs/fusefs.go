// Package fusefs serves a machine's sys/ (a kernfs.Tree) and dev/ (a
// chardev.Registry) as a real file system through FUSE, so that ordinary
// processes — cat, a shell's echo, a poll loop — see the same lifetimes a
// Go caller does: ENODEV on a file whose node or device was severed (EIO
// for a uio-like device, whatever errno the char device chose), ENOENT on
// a removed path, POLLERR|POLLHUP for a poller whose node or device went
// away.
//
// The adapter is thin; the semantics live in kernfs and chardev, the wire
// protocol in package fuse. Every FUSE open is one kernfs.File or
// chardev.File, closed at the FUSE release (or, for files a process still
// holds when the mount is closed, by Close). Every failing request is
// answered with sever.Errno of the error. Files are opened with direct
// I/O, so each read reaches the provider: a read of an attribute at offset
// 0 shows fresh content, as in sysfs.
//
// The server's side, in one call:
//
//	m, err := fusefs.Mount("/run/sever", fusefs.Sources{Sys: tree, Dev: chardev.RegistryOf(core)})
//	...
//	m.Close() // unmounts, even while processes hold files open
//
// A process's side is any program: `cat /run/sever/sys/class/gpio/gpiochip0/value`.
//
// Serving: requests are answered on the goroutine that read them from
// /dev/fuse (package fuse starts another reader only while a request takes
// long), so an open, a read of an attribute and a close cost no
// goroutine. Only what may block for long — a char device's read or write,
// which waits for the driver, and every write, whose Store may remove
// nodes and so wait for the kernel to drop their entries — runs on a
// goroutine of its own.
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
// by FUSE's poll wakeup, written to the kernel on the notifying goroutine
// itself (a callback registered on the open file's wait queue).
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
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/fuse"
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
	noHelper   bool
	noDirect   bool
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

// Debug traces every FUSE request to f, as a string naming its opcode,
// node and unique ID. It is for diagnosing; it is slow.
func Debug(f func(msg any)) Option { return func(c *config) { c.debug = f } }

// MountHow chooses how Mount mounts, for tests of each path: "direct"
// (mount(2) only, which needs root), "helper" (fusermount3 only) or ""
// (the default: direct where permitted, else fusermount3).
func MountHow(how string) Option {
	return func(c *config) {
		c.noHelper = how == "direct"
		c.noDirect = how == "helper"
	}
}

// Server is a machine's sys/ and dev/ served on a directory. Its states:
//
//	serving ──Close──▶ closing ──readers returned, files closed──▶ closed
//
// serving: the connection's readers answer FUSE requests. closing: the
// directory is being unmounted; requests in flight are cancelled, new ones
// still answered until the kernel drops the connection. closed: every
// reader and watcher has returned, no invalidation is being sent, and
// every file opened through the mount has been closed — by its FUSE
// release, or by Close for those a process still held.
type Server struct {
	dir  string
	src  Sources
	cfg  config
	uid  uint32 // owner reported for every node: the serving process's
	gid  uint32
	conn *fuse.Conn

	// ctx is cancelled by Close after the readers returned: it stops
	// every char device watcher.
	ctx    context.Context
	cancel context.CancelFunc

	unhook func() // takes the invalidation hook off the tree

	served   chan struct{} // closed when Serve returns
	serveErr error         // valid after served is closed

	inodes inodeTable

	mu      sync.Mutex
	handles map[uint64]*handle         // files opened and not yet released, by FUSE handle
	dirs    map[uint64]*dirHandle      // directories opened for listing
	nextFH  uint64                     // the last handle number given out
	cdevs   map[*chardev.Cdev]struct{} // char devices whose unregistration a watcher awaits
	closed  bool                       // Close has begun: no new handle is tracked

	watchers sync.WaitGroup // char device watcher goroutines (watchCdev)
	nwatch   atomic.Int32   // how many poll wakeups are registered, for tests
	nlookup  atomic.Int64   // lookups below sys/ and dev/, for tests

	closeOnce sync.Once
	closeErr  error
}

// Mount mounts src on dir, an existing directory, and serves it until
// Close: src.Sys as dir/sys, src.Dev as dir/dev. When it returns the mount
// is ready.
//
// As root it calls mount(2) itself; otherwise it mounts through
// fusermount3 (the setuid helper from the fuse3 package, looked up in
// PATH), which works where /etc/fuse.conf allows. The mount uses
// default_permissions: the kernel checks the nodes' mode bits. It is not
// visible to other users unless AllowOther is given.
//
// Mount never stacks a mount on a FUSE mount. If dir is a stale FUSE mount
// left by a server that died without unmounting, Mount first detaches it
// (see Unstale) and reports that through Logf; if a live server serves
// dir, Mount fails with an error wrapping EBUSY. It fails if /dev/fuse is
// missing or mounting is not permitted; the error then says what to
// install.
func Mount(dir string, src Sources, opts ...Option) (*Server, error) {
	cfg := config{logf: log.Printf, entryValid: DefaultEntryTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	abs, err := canonical(dir)
	if err != nil {
		return nil, fmt.Errorf("fusefs: %s: %w", dir, err)
	}
	if stale, err := Unstale(abs); err != nil {
		return nil, err
	} else if stale {
		cfg.logf("fusefs: %s: unmounted a stale FUSE mount left by an earlier run", abs)
	}
	conn, err := fuse.Mount(abs, fuse.MountOptions{
		FSName:             "sever",
		DefaultPermissions: true,
		AllowOther:         cfg.allowOther,
		NoHelper:           cfg.noHelper,
		NoDirect:           cfg.noDirect,
	})
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
		handles: make(map[uint64]*handle),
		dirs:    make(map[uint64]*dirHandle),
		cdevs:   make(map[*chardev.Cdev]struct{}),
	}
	m.inodes.init(src)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if src.Sys != nil {
		m.unhook = src.Sys.OnRemove(m.forget)
	}
	go func() {
		defer close(m.served)
		m.serveErr = conn.Serve(fuse.HandlerFunc(m.serve))
	}()
	return m, nil
}

// canonical is dir absolute with its symbolic links resolved, as
// /proc/self/mountinfo names a mount point. The last component is not
// resolved: it may be a dead mount, which cannot be examined.
func canonical(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	parent, base := filepath.Split(abs)
	if base == "" {
		return abs, nil
	}
	if real, err := filepath.EvalSymlinks(parent); err == nil {
		parent = real
	}
	p := filepath.Join(parent, base)
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return real, nil
		}
	}
	return p, nil
}

// Dir returns the absolute path of the mount point.
func (m *Server) Dir() string { return m.dir }

// Close unmounts the file system and returns when the readers have
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
// of its context, so does Close: the reader waits for the request in
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
	m.conn.CancelAll()
	<-m.served
	if m.serveErr != nil {
		errs = append(errs, fmt.Errorf("fusefs: %s: serve: %w", m.dir, m.serveErr))
	}
	// The kernel will send no more requests: stop the invalidations and
	// the char device watchers, then close what no release reached (a
	// release cancels its poll wakeup).
	if m.unhook != nil {
		m.unhook()
	}
	m.cancel()
	m.watchers.Wait()
	if err := m.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("fusefs: %s: close connection: %w", m.dir, err))
	}
	m.mu.Lock()
	m.closed = true
	left := make([]*handle, 0, len(m.handles))
	for _, h := range m.handles {
		left = append(left, h)
	}
	clear(m.handles)
	clear(m.dirs)
	m.mu.Unlock()
	for _, h := range left {
		h.release()
	}
	return errors.Join(errs...)
}

// unmount unmounts m.dir: cleanly if it can, else by force (see Close).
func (m *Server) unmount() error {
	err := m.conn.Unmount(false)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("fusefs: %w", err)
	}
	if err := m.conn.Unmount(true); err != nil {
		return fmt.Errorf("fusefs: %w", err)
	}
	if os.Geteuid() == 0 {
		m.cfg.logf("fusefs: %s: busy; aborted the connection and detached the mount", m.dir)
	} else {
		m.cfg.logf("fusefs: %s: busy; detached the mount, waiting for its open files to be closed", m.dir)
	}
	return nil
}

// Unstale makes sure no dead FUSE mount sits on dir. It finds the FUSE
// mounts on dir in /proc/self/mountinfo — never trusting stat, which the
// kernel may answer from its cache on a dead connection — and asks each
// for statfs, which the kernel always sends to the server: a mount whose
// server is gone fails with ENOTCONN (or ECONNABORTED), and is detached
// lazily (umount2 MNT_DETACH as root, fusermount3 -u -z otherwise), again
// until none is left — a mount stacked on another by an older run is
// found under it. It reports whether it removed one. A mount whose server
// answers is live: Unstale leaves it and fails with an error wrapping
// EBUSY, as it does when a server does not answer within 5 seconds.
func Unstale(dir string) (bool, error) {
	abs, err := canonical(dir)
	if err != nil {
		return false, fmt.Errorf("fusefs: %s: %w", dir, err)
	}
	removed := false
	for range 16 {
		mps, err := fuse.Mounts(abs)
		if err != nil {
			return removed, fmt.Errorf("fusefs: %s: %w", abs, err)
		}
		if len(mps) == 0 {
			return removed, nil
		}
		switch err := statfsWithin(abs, 5*time.Second); {
		case err == nil:
			return removed, fmt.Errorf("fusefs: %s is already served by a live FUSE server (%s): %w", abs, mps[len(mps)-1].Source, syscall.EBUSY)
		case errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED):
			if err := fuse.UnmountDetached(abs); err != nil {
				return removed, fmt.Errorf("fusefs: %s is a stale FUSE mount and unmounting it failed: %w", abs, err)
			}
			removed = true
		case errors.Is(err, os.ErrDeadlineExceeded):
			return removed, fmt.Errorf("fusefs: %s is a FUSE mount whose server does not answer; unmount it (umount -l %s): %w", abs, abs, syscall.EBUSY)
		default:
			return removed, fmt.Errorf("fusefs: %s: statfs: %w", abs, err)
		}
	}
	return removed, fmt.Errorf("fusefs: %s: still a dead FUSE mount after 16 unmounts: %w", abs, syscall.EBUSY)
}

// statfsWithin calls statfs(2) on dir, giving up after d (the call itself
// then finishes in the background when the server answers or dies).
func statfsWithin(dir string, d time.Duration) error {
	done := make(chan error, 1)
	go func() {
		var st syscall.Statfs_t
		done <- syscall.Statfs(dir, &st)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// forget is the tree's OnRemove hook: the node no longer resolves, so the
// kernel must forget its entry.
func (m *Server) forget(n *kernfs.Node) {
	if mutation.SkipInvalidation { // a planted bug: see package internal/mutation
		return
	}
	p := n.Parent()
	if p == nil {
		return
	}
	if id, ok := m.inodes.sysID(p); ok {
		m.invalidate(id, n.Name())
	}
}

// invalidate tells the kernel to drop its entry name in the directory
// inode dir, if it has one, so that the next path walk asks LOOKUP. It is
// synchronous: when it returns, the entry is gone. The kernel holds the
// directory's lock while it does it, so an invalidation that races a
// lookup in dir waits for the lookup's reply and removes what it cached.
// Nothing the mount does while the kernel holds that lock (a lookup, a
// listing) waits for a removal, and a reader is always free to answer the
// lookup (package fuse starts another when one is held up), so this cannot
// deadlock with the removal that calls it.
func (m *Server) invalidate(dir uint64, name string) {
	// ENOENT: the kernel does not know dir or the entry; ErrClosed or any
	// other error: the connection is going away. Nothing to do.
	_ = m.conn.InvalidateEntry(dir, name)
}

// errno is the answer to a failed request: the errno err means.
func errno(err error) syscall.Errno {
	return sever.Errno(err)
}
