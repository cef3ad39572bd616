// Package kernfs is the sysfs-like attribute tree: directories, text and
// binary attributes and symlinks whose nodes can be severed while files
// on them are open, and whose callbacks never run after they are severed.
//
// It is the orphaning of sysfs nodes at unregistration that seed 004 asks
// for (DESIGN.md, "Seed 004", §2-1), as an API a driver author cannot
// misuse:
//
//   - Each node is a sever.Scope, and the package adds no protocol of its
//     own: a node's provider code runs only through the scope's Call (inside
//     its active reference, with the owner checked and pinned, a panic
//     recovered as a check.DriverFault and returned as EIO). Remove claims
//     the subtree and severs each node's scope: deny, drain the operations
//     in flight — never waiting for open files — and run the provider's
//     per-open Release exactly once for every file still open. After Remove
//     returns no provider callback of the subtree is running or will run.
//   - An open file is a sever.Shell the framework owns. After its node is severed
//     every operation on it returns an error wrapping sever.ErrNoDevice,
//     and poll reports EventErr|EventHup. The shell, and the wait queue its
//     pollers sleep on, are freed at the last Close without calling
//     provider code, so seed 002's use-after-free (DESIGN.md, "Seed 002")
//     cannot be written.
//   - Every open file, and every scheduled callback, pins the sever.Owner of
//     the code it will call: the attribute's own owner, not its directory's
//     (seed 004, Examples 1 and 2). Unloading an owner first removes every
//     node it backs.
//
// The driver's side:
//
//	t := kernfs.New(sever.WithLog(log))
//	dev, _ := t.AddDir(t.Root(), kernfs.Dir{Name: "gpiochip0", Owner: drv, Hidden: true})
//	t.AddAttr(dev, kernfs.Attr{Name: "value", Owner: drv, Show: showValue, Store: storeValue, Parse: kernfs.Int(0, 1)})
//	t.Activate(dev) // the whole device appears at once
//	...
//	t.Remove(ctx, dev) // unplug: returns when no callback of dev runs or will run
//
// The user's side:
//
//	f, _ := t.Open("/gpiochip0/value", os.O_RDWR)
//	defer f.Close()
//	n, err := f.Read(buf) // after unplug: errors.Is(err, syscall.ENODEV)
//
// Whoever caches the tree's names — a FUSE mount whose kernel keeps
// directory entries — learns of removals through Tree.OnRemove; a reader
// that can be interrupted passes its context with File.ReadAtContext, and
// the provider finds it in Call.Context.
//
// Nothing in the package is global: a Tree is one simulated machine's sysfs.
package kernfs

import (
	"context"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// Limits enforced on input, as sysfs and the VFS enforce them.
const (
	PageSize   = 4096 // most bytes a text attribute's Show produces or its Store accepts
	MaxNameLen = 255  // longest name of a node (NAME_MAX)
	MaxPathLen = 4096 // longest path Lookup accepts (PATH_MAX)
)

// Tree is one attribute tree: the sysfs of one simulated machine. Its root
// directory exists from New on and cannot be removed. A Tree is safe for
// concurrent use; lookups, reads and writes on different nodes share no
// lock (each directory has its own).
type Tree struct {
	opts     []sever.Option
	log      *check.Log
	root     *Node
	ownersMu sync.Mutex
	owners   map[*sever.Owner]*ownerNodes // nodes each owner backs, for its unload hook
	cbMu     sync.Mutex
	cbs      int           // scheduled callbacks not yet returned
	cbIdle   chan struct{} // closed when cbs drops to 0; nil until Flush waits
	hooksMu  sync.Mutex
	hooks    []*removeHook // OnRemove's; replaced, never changed in place
	made     atomic.Uint64 // nodes made so far: the next node's seq
}

// New returns an empty tree. opts are passed to every primitive the tree
// creates (each node's sever.Active, each open file's sever.Ref and
// sever.WaitQueue): sever.WithLog reports contract violations — and
// registers every per-open Release as a check.Pending — into a log;
// sever.WithTracking records who holds what.
func New(opts ...sever.Option) *Tree {
	t := &Tree{opts: opts, log: sever.LogOf(opts...), owners: make(map[*sever.Owner]*ownerNodes)}
	t.root = t.newNode(nil, "", KindDir, fs.ModeDir|0o755, nil)
	t.root.state.Store(int32(stateLive))
	return t
}

// Root returns the root directory, "/".
func (t *Tree) Root() *Node { return t.root }

// Kind is what a node is.
type Kind uint8

const (
	KindDir     Kind = iota + 1 // a directory
	KindAttr                    // a text attribute: Show and Store
	KindBin                     // a binary attribute: Read and Write at offsets, optional mmap
	KindSymlink                 // a symbolic link to another node
)

func (k Kind) String() string {
	switch k {
	case KindDir:
		return "dir"
	case KindAttr:
		return "attr"
	case KindBin:
		return "bin"
	case KindSymlink:
		return "symlink"
	}
	return "kind?"
}

// Dir describes a directory for AddDir.
type Dir struct {
	Name string
	// Mode is the permission bits; 0 means 0755.
	Mode fs.FileMode
	// Owner is the code the directory belongs to (the driver that made the
	// device). Unloading it removes the directory and everything below it.
	// nil means built-in code that is never unloaded.
	Owner *sever.Owner
	// Hidden creates the directory invisible: Lookup, Readdir and Open do
	// not see it, nor anything added below it, until Activate. A device is
	// built hidden and activated at once, so nobody sees it half-made.
	Hidden bool
}

// Attr describes a text attribute for AddAttr: a sysfs file whose whole
// content is produced by one Show and changed by one Store.
type Attr struct {
	Name string
	// Mode is the permission bits; 0 means 0444 with only Show, 0200 with
	// only Store, 0644 with both. A mode bit without its callback is
	// ignored: opening for write needs Store, for read needs Show.
	Mode fs.FileMode
	// Owner is the code behind Show, Store, Parse, Open and Release — the
	// attribute's own, which may differ from its directory's (seed 004,
	// Example 2: scsi_mod's "delete" under libata's host). Every open file
	// pins it until its Release has run. nil means built-in code.
	Owner *sever.Owner
	Show  ShowFunc
	Store StoreFunc
	// Parse turns a write into the value Store receives, after one trailing
	// newline is trimmed. nil means the string itself (at most PageSize
	// bytes). See Int, Bool, Enum and String.
	Parse   Parser
	Open    OpenFunc
	Release ReleaseFunc
}

// BinAttr describes a binary attribute for AddBin: a file read and written
// at offsets, like a device's config space or an EEPROM.
type BinAttr struct {
	Name string
	// Mode is the permission bits; 0 is derived from Read and Write as for
	// Attr.
	Mode fs.FileMode
	// Owner is the code behind Read, Write, Open and Release; as Attr.Owner.
	Owner *sever.Owner
	// Size is the file's size, reported by Seek(0, io.SeekEnd); reads at or
	// past it return io.EOF without calling Read. 0 means unknown: Read
	// decides where the data ends by returning 0 bytes.
	Size  int64
	Read  ReadFunc
	Write WriteFunc
	// Region, if not nil, makes the file mappable: File.Mmap returns a
	// mapping of it. The node takes the region over: removing the node
	// severs it, and every open file holds it until its last Close, so the
	// framework frees the region's memory once the node is removed and the
	// last mapping and open are gone.
	Region  *sever.Region
	Open    OpenFunc
	Release ReleaseFunc
}

// ShowFunc produces a text attribute's content: it appends the text to buf
// and returns the result (at most PageSize bytes are kept), as
// strconv.AppendInt does. It is called on the reading goroutine by a read
// at offset 0, each time, so a reader sees fresh content after seeking to 0;
// reads further into the file are served from what it produced. It runs
// inside the node's active reference with the owner pinned: the node is not
// severed, the owner not gone, and Remove waits for it to return. A panic
// is recovered: the read fails with an error wrapping sever.ErrIO and a
// check.DriverFault is recorded in the tree's log, if it has one. It may
// block (Remove waits longer) and may touch the provider's state; it must
// not keep buf. It must not Remove its own node or an ancestor except
// through c.RemoveSelf.
type ShowFunc func(c *Call, buf []byte) ([]byte, error)

// StoreFunc changes a text attribute: it receives the value Parse made of
// one write. It is called once per accepted write, on the writing
// goroutine, under the same guarantees as ShowFunc; it is not called for a
// write Parse rejects or one longer than PageSize. A returned error is
// returned from the write, wrapped with the path. To remove its own node or
// device (SCSI "delete", zram "reset") it calls c.RemoveSelf.
type StoreFunc func(c *Call, v any) error

// ReadFunc reads a binary attribute: it fills buf with the bytes at off and
// returns how many; 0 bytes and a nil error mean end of file. It is called
// on the reading goroutine under the same guarantees as ShowFunc.
type ReadFunc func(c *Call, off int64, buf []byte) (int, error)

// WriteFunc writes data at off into a binary attribute and returns how many
// bytes it took. It is called on the writing goroutine under the same
// guarantees as ShowFunc.
type WriteFunc func(c *Call, off int64, data []byte) (int, error)

// OpenFunc attaches per-open state to a file being opened: what it returns
// is the file's Private, handed to every callback through c.Private and to
// Release. It is called once per Open, on the opening goroutine, inside the
// node's active reference with the owner pinned. If it fails, Open fails
// with its error and Release is never called for that open. It must not
// call c.RemoveSelf.
type OpenFunc func(c *Call) (private any, err error)

// ReleaseFunc ends one open: it frees what OpenFunc attached. It is called
// exactly once per successful open (also when the attribute has no Open),
// either by Close, on the closing goroutine, or — if the file is still open
// when its node is removed — by Remove, on the removing goroutine, after
// every operation in flight on the node has returned. No callback of this
// open runs after it, and the owner's pin for this open is dropped right
// after it returns: when it returns the provider's code may go. It must not
// block for long (Remove waits for it) and must not call into the tree.
type ReleaseFunc func(n *Node, private any)

// Parser turns the text of one write, with one trailing newline trimmed,
// into the value Store receives. An error rejects the write: it returns an
// error wrapping sever.ErrInvalid and Store is not called. A Parser runs on
// the writing goroutine inside the node's active reference, as the
// attribute owner's code.
type Parser func(s string) (any, error)

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Kind Kind
	Mode fs.FileMode
	Node *Node
}

// Flush waits until every callback scheduled with ScheduleCallback has
// returned, or ctx is done.
func (t *Tree) Flush(ctx context.Context) error {
	t.cbMu.Lock()
	if t.cbs == 0 {
		t.cbMu.Unlock()
		return nil
	}
	if t.cbIdle == nil {
		t.cbIdle = make(chan struct{})
	}
	idle := t.cbIdle
	t.cbMu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *Tree) callbackDone() {
	t.cbMu.Lock()
	t.cbs--
	if t.cbs == 0 && t.cbIdle != nil {
		close(t.cbIdle)
		t.cbIdle = nil
	}
	t.cbMu.Unlock()
}
