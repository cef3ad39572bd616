package kernfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
)

// File is an open attribute: a sever.Shell of the node's scope, plus what
// an attribute adds — the provider's Private, a read offset, the text the
// last Show produced. Its states are the shell's:
//
//	open ──node removed──▶ severed ──Close──▶ closed ──last reference──▶ freed
//	  └───────────────────────Close───────────────▲
//
// open: operations enter the node's scope and call the provider. severed:
// the provider's Release has run (by Remove) and every operation returns
// an error wrapping sever.ErrNoDevice; Poll and Wait report
// EventErr|EventHup. closed: Close ran the Release if Remove had not;
// every operation returns an error wrapping sever.ErrClosed. freed: the
// last reference is put; the wait queue is freed and the file's hold on
// the node's Region dropped, by the shell. No provider code runs at free.
//
// Operations on one File are serialized, as the kernel serializes them per
// open file; Close waits for the operation in progress on the File, never
// for one on another open of the node. Poll and Wait do not wait for
// operations.
type File struct {
	node    *Node
	tree    *Tree
	canRead bool
	canWrt  bool
	sh      *sever.Shell // the open as the framework owns it: Release once, free at the last reference
	private any
	region  *sever.Region // the node's Region, if any; the shell holds it

	mu   sync.Mutex // serializes operations on this open
	off  int64
	buf  []byte // text attributes: what the last Show produced
	call Call   // the value handed to callbacks; guarded by mu

	seen atomic.Uint64 // queue sequence when the content was last produced
}

// Call is what a callback gets besides its arguments: the node and open it
// runs for, and the operations only a callback may perform. A Call is
// valid only until the callback returns; it must not be kept.
type Call struct {
	f      *File
	node   *Node
	ctx    context.Context // the operation's; nil means context.Background()
	wait   context.Context // ctx, also cancelled at the node's removal: made by WaitContext
	stop   func()          // ends wait at the operation's exit
	tok    sever.Token     // the operation's access to node.active
	inOp   bool            // inside Show, Store, Read or Write (RemoveSelf allowed)
	broken bool            // RemoveSelf broke tok's protection
}

// Node returns the node the callback runs for.
func (c *Call) Node() *Node { return c.node }

// Path returns the node's path.
func (c *Call) Path() string { return c.node.Path() }

// Context returns the context of the operation the callback runs for: the
// one given to ReadAtContext or WriteAtContext — on a FUSE mount, the
// request's, cancelled when the reading or writing process is interrupted
// by a signal — and context.Background() for every other operation and
// for Open. A Show, Store, Read or Write that blocks should return when it
// is done, with an error wrapping ctx.Err(); the operation returns that
// error (a process on the mount sees EINTR). To be woken by the node's
// removal as well, wait on WaitContext.
func (c *Call) Context() context.Context {
	if c.ctx == nil {
		return context.Background()
	}
	return c.ctx
}

// WaitContext returns Context, also cancelled when the node's removal
// begins (its cause, context.Cause, is then the node's ENODEV error). A
// callback that waits — for the hardware's reply — selects on its Done:
// the removal then waits for no blocked callback, and the operation the
// removal cut short returns ENODEV (one whose own context ended returns
// the callback's error, as with Context). It is valid during the callback
// only, and made at the first call: a callback that never asks costs
// nothing. Do not give it to RemoveSelf, whose removal cancels it.
func (c *Call) WaitContext() context.Context {
	if c.wait != nil {
		return c.wait
	}
	removal := c.node.scope.Context()
	if c.ctx == nil || c.ctx.Done() == nil {
		// Open, and operations whose own context never ends: nothing to
		// merge.
		c.wait = removal
		return removal
	}
	ctx, cancel := context.WithCancelCause(c.ctx)
	stop := context.AfterFunc(removal, func() { cancel(context.Cause(removal)) })
	c.wait, c.stop = ctx, func() { stop(); cancel(nil) }
	return ctx
}

// callbackErr names the node in a callback's error. A callback that gave up a
// wait because the removal cancelled its WaitContext — not because its
// own context ended — failed because the node is gone: ENODEV.
func (c *Call) callbackErr(err error) error {
	if c.wait != nil && c.wait.Err() != nil && errors.Is(err, context.Canceled) &&
		(c.ctx == nil || c.ctx.Err() == nil) {
		return c.node.errGone
	}
	return wrap(c.node, err)
}

// Private returns what the attribute's Open returned for this open file,
// or nil.
func (c *Call) Private() any { return c.f.private }

// RemoveSelf removes top — the callback's own node, or, if top is an
// ancestor directory, the whole device it belongs to — from inside Show,
// Store, Read or Write, without deadlocking on the operation it is called
// from (kernfs_remove_self). nil means the callback's own node.
//
// It first drops this operation's hold on the node's active reference, so
// the removal does not wait for the caller; from then on the caller is on
// its own: this open's Release may run (on this or the removing goroutine)
// before RemoveSelf returns, so the callback must not touch its per-open
// state, nor anything the removal lets the provider free, after calling
// RemoveSelf. It then removes top as Tree.Remove does, waiting for every
// other operation in the subtree, and returns when the subtree is removed.
//
// won reports whether this call began the removal of top. Of concurrent
// self-removers of one node, and plain Removes of it, exactly one wins;
// the others learn they lost and still return only when the removal they
// joined has finished. The usual SCSI "delete" pattern: remove the
// attribute's own node with RemoveSelf; if won, unregister the device,
// whose removal no longer includes a node the caller holds.
//
// RemoveSelf panics if top is neither the node nor an ancestor, or when
// called from Open.
func (c *Call) RemoveSelf(ctx context.Context, top *Node) (won bool, err error) {
	if !c.inOp {
		panic("kernfs: RemoveSelf called outside Show, Store, Read or Write")
	}
	if top == nil {
		top = c.node
	}
	if !isAncestorOrSelf(top, c.node) {
		panic(fmt.Sprintf("kernfs: RemoveSelf of %s from a callback of %s, which it does not contain; use Tree.Remove", top.Path(), c.node.Path()))
	}
	if top.parent == nil {
		panic("kernfs: RemoveSelf of the root")
	}
	if !c.broken {
		c.node.scope.Active().Break(&c.tok)
		c.broken = true
	}
	return c.node.tree.remove(ctx, top)
}

// ScheduleCallback runs fn later, on a goroutine of its own, with the
// attribute's owner pinned; see Tree.ScheduleCallback.
func (c *Call) ScheduleCallback(fn func()) error { return c.node.tree.ScheduleCallback(c.node, fn) }

func isAncestorOrSelf(a, n *Node) bool {
	for m := n; m != nil; m = m.parent {
		if m == a {
			return true
		}
	}
	return false
}

// Open opens the node at path, following symlinks, with flag's access mode
// (os.O_RDONLY, os.O_WRONLY or os.O_RDWR; other bits are ignored). It fails
// as Lookup does, and as OpenNode does.
func (t *Tree) Open(path string, flag int) (*File, error) {
	n, err := t.lookup(path, true)
	if err != nil {
		return nil, err
	}
	return t.OpenNode(n, flag)
}

// OpenNode opens attribute n (following it if it is a symlink). It fails
// with an error naming the path and wrapping ErrIsDir for a directory,
// ErrNotExist if n is hidden or being removed, ErrPermission if the access
// mode asks for reading without Show or Read (or a read bit) or for writing
// without Store or Write (or a write bit), ErrNoDevice if the attribute's
// owner is unloading, or the error of the attribute's Open.
//
// A successful open pins the attribute's owner until the open's Release has
// run, and, with a log, registers that Release as a check.Pending.
func (t *Tree) OpenNode(n *Node, flag int) (*File, error) {
	t.mine(n)
	if n.kind == KindSymlink {
		hops := 0
		m, err := resolve(n, &hops)
		if err != nil {
			return nil, n.errorf(err)
		}
		n = m
	}
	if n.kind == KindDir {
		return nil, n.errorf(sever.ErrIsDir)
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	wantRead := acc == os.O_RDONLY || acc == os.O_RDWR
	wantWrite := acc == os.O_WRONLY || acc == os.O_RDWR
	canRead, canWrite := n.mode&0o444 != 0, n.mode&0o222 != 0
	if n.attr != nil {
		canRead = canRead && n.attr.Show != nil
		canWrite = canWrite && n.attr.Store != nil
	} else {
		canRead = canRead && (n.bin.Read != nil || n.bin.Region != nil)
		canWrite = canWrite && n.bin.Write != nil
	}
	if wantRead && !canRead || wantWrite && !canWrite {
		return nil, n.errorf(sever.ErrPermission)
	}

	if !n.Visible() {
		return nil, n.errorf(sever.ErrNotExist)
	}
	f := &File{node: n, tree: t, canRead: wantRead, canWrt: wantWrite}
	f.call = Call{f: f, node: n}
	if n.bin != nil {
		f.region = n.bin.Region
	}
	open, rel := openFunc(n), releaseFunc(n)
	sh, err := n.scope.Open(func() error {
		// Inside the node's access: a node claimed by a remover is gone
		// for Open, even before its drain.
		if !n.Visible() {
			return n.errorf(sever.ErrNotExist)
		}
		if open == nil {
			return nil
		}
		priv, err := open(&f.call)
		f.private = priv
		return err
	}, func() {
		if rel != nil {
			rel(n, f.private)
		}
	})
	if err != nil {
		if n.Removed() && errors.Is(err, sever.ErrNoDevice) {
			return nil, n.errorf(sever.ErrNotExist)
		}
		return nil, wrap(n, err)
	}
	f.sh = sh
	f.seen.Store(sh.Seq())
	return f, nil
}

// Node returns the node the file was opened on.
func (f *File) Node() *Node { return f.node }

// Path returns the path of the file's node.
func (f *File) Path() string { return f.node.Path() }

// enter begins an operation: it enters the node's scope through the
// shell and leaves the token in f.call.tok. f.mu is held.
func (f *File) enter() error {
	n := f.node
	f.call = Call{f: f, node: n}
	if err := f.sh.Enter(&f.call.tok); err != nil {
		return err
	}
	// Deny from the moment a remover claims the node, before its drain.
	if nodeState(n.state.Load()) != stateLive {
		f.sh.Exit(&f.call.tok)
		return n.errGone
	}
	f.call.inOp = true
	return nil
}

func (f *File) exit() {
	f.call.inOp = false
	if f.call.stop != nil {
		f.call.stop()
		f.call.stop = nil
	}
	f.call.ctx, f.call.wait = nil, nil // keep no request's context past its operation
	f.sh.Exit(&f.call.tok)
}

// invoke calls the provider's fn, the node's code at site, through the
// protocol's one fault policy (sever.Shell.Invoke).
func (f *File) invoke(site int, fn func() error) error {
	return f.sh.Invoke(f.node.site(site), fn)
}

// Read reads from the file's offset and advances it. For a text attribute a
// read at offset 0 calls Show and the file serves that text until the next
// read at offset 0 (Seek to 0 for fresh content); it returns io.EOF at its
// end. For a binary attribute each read calls Read. Errors name the path
// and wrap ErrNoDevice once the node is severed, ErrClosed after Close and
// ErrPermission if the file is not open for reading.
func (f *File) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.readAt(context.Background(), p, f.off)
	f.off += int64(n)
	return n, err
}

// ReadAt reads at off without moving the file's offset; otherwise as Read.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readAt(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context for the provider: Show or Read
// finds ctx in Call.Context and should return early when it is done. If
// ctx is done before the operation begins — also while it waited for
// another operation on this File — it returns an error wrapping ctx's
// error without calling the provider.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, f.node.errorf(err)
	}
	return f.readAt(ctx, p, off)
}

// readAt reads at off with ctx in the Call.
// f.mu is held.
func (f *File) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.exit()
	f.call.ctx = ctx
	if !f.canRead {
		return 0, f.node.errorf(fmt.Errorf("not open for reading: %w", sever.ErrPermission))
	}
	if off < 0 {
		return 0, f.node.errorf(fmt.Errorf("negative offset: %w", sever.ErrInvalid))
	}
	if f.node.kind == KindBin {
		return f.readBin(p, off)
	}
	if off == 0 || f.buf == nil {
		if f.buf == nil {
			f.buf = make([]byte, 0, PageSize)
		}
		// Take the sequence before Show: a Notify during Show is then seen
		// by the next Poll rather than lost.
		f.seen.Store(f.sh.Seq())
		show := f.node.attr.Show
		var out []byte
		var serr error
		if err := f.invoke(siteShow, func() error { out, serr = show(&f.call, f.buf[:0]); return nil }); err != nil {
			return 0, err
		}
		if serr != nil {
			f.buf = f.buf[:0]
			return 0, f.call.callbackErr(serr)
		}
		if len(out) > PageSize {
			out = out[:PageSize]
		}
		f.buf = out
	}
	if off >= int64(len(f.buf)) {
		return 0, io.EOF
	}
	return copy(p, f.buf[off:]), nil
}

func (f *File) readBin(p []byte, off int64) (int, error) {
	b := f.node.bin
	if b.Size > 0 {
		if off >= b.Size {
			return 0, io.EOF
		}
		if rest := b.Size - off; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	if b.Read == nil {
		return 0, f.node.errorf(fmt.Errorf("read: %w (map it)", sever.ErrNotSupported))
	}
	var n int
	var rerr error
	if err := f.invoke(siteRead, func() error { n, rerr = b.Read(&f.call, off, p); return nil }); err != nil {
		return 0, err
	}
	if rerr != nil {
		return n, f.call.callbackErr(rerr)
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes p at the file's offset and advances it. For a text
// attribute each Write is one Store: p, less one trailing newline, goes
// through the attribute's Parser; a write of more than PageSize bytes fails
// with an error wrapping ErrTooLarge and one the Parser rejects with
// ErrInvalid, both without calling Store. For a binary attribute each
// Write calls Write. Other errors as for Read.
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.writeAt(context.Background(), p, f.off)
	f.off += int64(n)
	return n, err
}

// WriteAt writes at off without moving the file's offset; otherwise as
// Write. A text attribute ignores off, as sysfs does.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writeAt(context.Background(), p, off)
}

// WriteAtContext is WriteAt with a context for the provider, as
// ReadAtContext: Parse, Store or Write finds ctx in Call.Context, and a
// ctx done before the operation begins fails it without calling the
// provider.
func (f *File) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, f.node.errorf(err)
	}
	return f.writeAt(ctx, p, off)
}

// writeAt writes at off with ctx in the Call.
// f.mu is held.
func (f *File) writeAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.exit()
	f.call.ctx = ctx
	n := f.node
	if !f.canWrt {
		return 0, n.errorf(fmt.Errorf("not open for writing: %w", sever.ErrPermission))
	}
	if off < 0 {
		return 0, n.errorf(fmt.Errorf("negative offset: %w", sever.ErrInvalid))
	}
	if n.kind == KindBin {
		b := n.bin
		if b.Size > 0 && off+int64(len(p)) > b.Size {
			return 0, n.errorf(fmt.Errorf("write of %d bytes at %d past size %d: %w", len(p), off, b.Size, sever.ErrTooLarge))
		}
		var w int
		var werr error
		if err := f.invoke(siteWrite, func() error { w, werr = b.Write(&f.call, off, p); return nil }); err != nil {
			return 0, err
		}
		if werr != nil {
			return w, f.call.callbackErr(werr)
		}
		return w, nil
	}
	if len(p) > PageSize {
		return 0, n.errorf(fmt.Errorf("write of %d bytes, more than a page (%d): %w", len(p), PageSize, sever.ErrTooLarge))
	}
	s := strings.TrimSuffix(string(p), "\n")
	a := n.attr
	var v any = s
	if a.Parse != nil {
		var perr error
		if err := f.invoke(siteParse, func() error { v, perr = a.Parse(s); return nil }); err != nil {
			return 0, err
		}
		if perr != nil {
			if !errors.Is(perr, sever.ErrInvalid) {
				perr = fmt.Errorf("%v: %w", perr, sever.ErrInvalid)
			}
			return 0, n.errorf(perr)
		}
	}
	var serr error
	if err := f.invoke(siteStore, func() error { serr = a.Store(&f.call, v); return nil }); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, f.call.callbackErr(serr)
	}
	return len(p), nil
}

// Seek sets the offset of the next Read or Write, as io.Seeker does;
// io.SeekEnd is relative to a binary attribute's Size or to the text the
// last Show produced. It calls no provider code. It fails with an error
// wrapping ErrNoDevice once the node is severed, ErrClosed after Close and
// ErrInvalid for a negative result or a bad whence.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sh.Closed() {
		return 0, f.node.errorf(sever.ErrClosed)
	}
	n := f.node
	if nodeState(n.state.Load()) != stateLive {
		return 0, n.errGone
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = f.off
	case io.SeekEnd:
		if n.bin != nil {
			base = n.bin.Size
		} else {
			base = int64(len(f.buf))
		}
	default:
		return 0, n.errorf(fmt.Errorf("whence %d: %w", whence, sever.ErrInvalid))
	}
	if base+offset < 0 {
		return 0, n.errorf(fmt.Errorf("negative offset: %w", sever.ErrInvalid))
	}
	f.off = base + offset
	return f.off, nil
}

// Poll reports, without blocking, what happened since the content was last
// produced (the last read at offset 0, or the open): EventPri|EventErr if
// the node was notified (sysfs_notify), 0 if not. Once the node is severed
// it returns EventErr|EventHup and an error wrapping ErrNoDevice; after
// Close, 0 and ErrClosed. It calls no provider code.
func (f *File) Poll() (sever.Events, error) {
	if f.sh.Closed() {
		return 0, f.node.errorf(sever.ErrClosed)
	}
	if f.node.Removed() {
		return sever.EventErr | sever.EventHup, f.node.errGone
	}
	return f.sh.Poll(f.seen.Load())
}

// Wait blocks until Poll would report something: the node is notified
// after the content was last produced (EventPri|EventErr), the node is
// severed (EventErr|EventHup and an error wrapping ErrNoDevice), the file
// is closed (0 and ErrClosed) or ctx is done (0 and ctx's error). The
// queue it sleeps on is the file's own and lives until the file's last
// reference, which Wait holds while it sleeps; nothing the provider frees
// can pull it away.
func (f *File) Wait(ctx context.Context) (sever.Events, error) {
	if f.sh.Closed() {
		return 0, f.node.errorf(sever.ErrClosed)
	}
	// Poll reports the hang-up from the moment the node is claimed for
	// removal; the queue is severed only after the drain. Do not sleep
	// through what Poll already says (found by sever stress: a Wait after
	// Poll had reported EventErr|EventHup slept until its deadline).
	if f.node.Removed() {
		return sever.EventErr | sever.EventHup, f.node.errGone
	}
	ev, _, err := f.sh.Wait(ctx, f.seen.Load())
	if err == nil && f.node.Removed() { // woken by the claim (Tree.Remove)
		return sever.EventErr | sever.EventHup, f.node.errGone
	}
	return ev, err
}

// OnChange registers fn to run once, when Wait would wake: on the
// goroutine of the node's next Notify, of the Remove that claims the node
// (from then on Poll reports EventErr|EventHup), or of Close — or at once
// if the file is closed. To miss nothing, register first, then Poll.
// cancel removes the registration and reports whether fn had not run and
// now never will. A Notify wakes fn whatever Poll then reports; fn is
// framework code and runs on the notifier's goroutine, which may hold the
// provider's locks or the removal path's: it must not block and may take
// only leaf locks (see sever.Shell.OnChange).
func (f *File) OnChange(fn func()) (cancel func() bool) {
	return f.sh.OnChange(fn)
}

// Mmap maps the binary attribute's Region. The mapping stays valid after
// the node is removed and after Close, until Unmap. It fails with an error
// wrapping ErrNotSupported if the attribute has no Region, and otherwise
// as Read.
func (f *File) Mmap() (*sever.Mapping, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(); err != nil {
		return nil, err
	}
	defer f.exit()
	if f.region == nil {
		return nil, f.node.errorf(fmt.Errorf("mmap: %w", sever.ErrNotSupported))
	}
	m, err := f.region.Map()
	if err != nil {
		return nil, f.node.errorf(err)
	}
	return m, nil
}

// Close closes the file. If its node has not been removed, Close runs the
// open's Release (on this goroutine, after the operation in progress on
// this File, if any, has returned) and drops the owner's pin; if the node
// was removed, Remove already ran Release and Close calls no provider code.
// Waiters in Wait on this File wake with ErrClosed. The shell is freed when
// its last reference is put, here or later. A second Close returns an
// error wrapping ErrClosed.
func (f *File) Close() error {
	if f.sh.Closed() {
		return f.node.errorf(sever.ErrClosed)
	}
	f.mu.Lock() // after the operation in progress on this File
	defer f.mu.Unlock()
	return f.sh.Close()
}

// Indices into a node's precomputed site names (the strings Owner.Call
// reports when a call would go into a gone owner).
const (
	siteShow = iota
	siteStore
	siteParse
	siteRead
	siteWrite
	siteCount
)

var siteNames = [siteCount]string{"Show", "Store", "Parse", "Read", "Write"}

func openFunc(n *Node) OpenFunc {
	if n.attr != nil {
		return n.attr.Open
	}
	return n.bin.Open
}

func releaseFunc(n *Node) ReleaseFunc {
	if n.attr != nil {
		return n.attr.Release
	}
	return n.bin.Release
}

// wrap names n's path in a provider's error, unless it already names it.
func wrap(n *Node, err error) error {
	var oe *sever.ObjectError
	if errors.As(err, &oe) {
		return err
	}
	return n.errorf(err)
}
