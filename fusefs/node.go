package fusefs

import (
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/fuse"
	"github.com/sever-dev/sever/kernfs"
)

// attrValid is how long the kernel may cache a node's attributes. Without
// it every path component costs a GETATTR besides its LOOKUP (the
// kernel's permission check wants fresh attributes). A kernfs node's mode,
// kind and size never change, and the same kernfs node is always the same
// inode, so they cannot go stale.
const attrValid = time.Hour

// The inodes the mount makes itself; they live as long as the mount.
const (
	rootID   = 1 // the mount's root: sys/ and dev/
	devDirID = 2 // dev/
	firstID  = 3
)

// inode is what the kernel knows by a node ID: a kernfs node, or a char
// device under dev/, with how many lookups of it the kernel has not
// forgotten. The same kernfs node or char device is always the same
// inode while the kernel remembers it; a node removed and added again
// under the same name is a new one.
type inode struct {
	id      uint64
	lookups uint64
	n       *kernfs.Node  // a node of sys/ (the tree's root is sys/ itself)
	c       *chardev.Cdev // or a char device under dev/
}

// inodeTable maps node IDs to what they name and back. An entry lives
// from the first LOOKUP that returns it until the kernel FORGETs all its
// lookups; IDs are never reused.
type inodeTable struct {
	mu    sync.Mutex
	byID  map[uint64]*inode
	bySys map[*kernfs.Node]*inode
	byDev map[*chardev.Cdev]*inode
	next  uint64
}

func (t *inodeTable) init(src Sources) {
	t.byID = make(map[uint64]*inode)
	t.bySys = make(map[*kernfs.Node]*inode)
	t.byDev = make(map[*chardev.Cdev]*inode)
	t.next = firstID
}

// get returns the inode of id, or nil if the kernel should not know it.
func (t *inodeTable) get(id uint64) *inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

// sysID returns the node ID of n, if the kernel knows it.
func (t *inodeTable) sysID(n *kernfs.Node) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if in := t.bySys[n]; in != nil {
		return in.id, true
	}
	return 0, false
}

// ref returns the inode of n or c, creating it, and counts one lookup.
func (t *inodeTable) ref(n *kernfs.Node, c *chardev.Cdev) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var in *inode
	if n != nil {
		in = t.bySys[n]
	} else {
		in = t.byDev[c]
	}
	if in == nil {
		in = &inode{id: t.next, n: n, c: c}
		t.next++
		t.byID[in.id] = in
		if n != nil {
			t.bySys[n] = in
		} else {
			t.byDev[c] = in
		}
	}
	in.lookups++
	return in.id
}

// forget drops k lookups of id; at none the inode is gone.
func (t *inodeTable) forget(id, k uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.byID[id]
	if in == nil {
		return
	}
	if in.lookups > k {
		in.lookups -= k
		return
	}
	delete(t.byID, id)
	if in.n != nil {
		delete(t.bySys, in.n)
	} else {
		delete(t.byDev, in.c)
	}
}

// Len returns how many inodes the kernel knows besides the mount's own.
func (t *inodeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// serve answers one request; see package fuse's Handler.
func (m *Server) serve(r *fuse.Request) {
	if m.cfg.debug != nil {
		m.cfg.debug(fmt.Sprintf("%v node %d unique %d pid %d", r.Opcode, r.Node, r.Unique, r.PID))
	}
	switch r.Opcode {
	case fuse.OpForget, fuse.OpBatchForget:
		for _, f := range r.Forgets() {
			m.inodes.forget(f.Node, f.Lookups)
		}
	case fuse.OpLookup:
		m.lookup(r)
	case fuse.OpGetattr:
		var a fuse.Attr
		if e := m.attr(r.Node, &a); e != 0 {
			r.Reply(e)
			return
		}
		r.ReplyAttr(&a, attrValid)
	case fuse.OpSetattr:
		m.setattr(r)
	case fuse.OpReadlink:
		m.readlink(r)
	case fuse.OpOpen:
		m.open(r)
	case fuse.OpRead:
		m.read(r)
	case fuse.OpWrite:
		m.write(r)
	case fuse.OpRelease:
		m.release(r)
	case fuse.OpPoll:
		m.poll(r)
	case fuse.OpOpendir:
		m.opendir(r)
	case fuse.OpReaddir:
		m.readdir(r)
	case fuse.OpReleasedir:
		in, err := r.Release()
		if err == nil {
			m.mu.Lock()
			delete(m.dirs, in.Handle)
			m.mu.Unlock()
		}
		r.Reply(0)
	case fuse.OpFlush, fuse.OpFsync, fuse.OpFsyncdir:
		r.Reply(0) // as on sysfs: nothing to write back
	case fuse.OpStatfs:
		r.ReplyStatfs(uint64(m.inodes.len()))
	default:
		r.Reply(syscall.ENOSYS)
	}
}

// unixMode is a kernfs mode as stat(2) has it.
func unixMode(mode fs.FileMode) uint32 {
	perm := uint32(mode.Perm())
	switch {
	case mode&fs.ModeDir != 0:
		return syscall.S_IFDIR | perm
	case mode&fs.ModeSymlink != 0:
		return syscall.S_IFLNK | perm
	}
	return syscall.S_IFREG | perm
}

// attr describes inode id. A kernfs node reports its mode bits and size
// as kernfs has them: a text attribute is a page long, as in sysfs, a
// binary attribute as long as it declared (0 if it did not; reads go to
// the attribute regardless, with direct I/O). Attributes of a removed node
// still answer, as fstat on an unlinked file does. The mount's own
// directories (the root, dev/) have mode 0755; a dev/ file mode devMode
// and size 0. Everything is owned by the serving user.
func (m *Server) attr(id uint64, a *fuse.Attr) syscall.Errno {
	*a = fuse.Attr{Ino: id, UID: m.uid, GID: m.gid, Nlink: 1}
	switch id {
	case rootID, devDirID:
		a.Mode = syscall.S_IFDIR | 0o755
		a.Nlink = 2
		return 0
	}
	in := m.inodes.get(id)
	if in == nil {
		return syscall.ESTALE
	}
	if in.c != nil {
		a.Mode = syscall.S_IFREG | devMode
		return 0
	}
	n := in.n
	a.Mode = unixMode(n.Mode())
	switch n.Kind() {
	case kernfs.KindDir:
		a.Nlink = 2
	case kernfs.KindAttr, kernfs.KindBin:
		a.Size = uint64(n.Size())
	case kernfs.KindSymlink:
		if target, err := m.src.Sys.Readlink(n); err == nil {
			a.Size = uint64(len(target))
		}
	}
	return 0
}

// lookup finds a name. In a kernfs directory it answers ENOENT once the
// directory or the child is being removed, and for a child of the same
// name that replaced the one the kernel knew under another directory
// node. Negative entries are not cached (an error reply has no validity),
// so a node added or activated is found at once.
func (m *Server) lookup(r *fuse.Request) {
	name, err := r.Lookup()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	var e fuse.Entry
	switch r.Node {
	case rootID:
		e.EntryTime = attrValid // sys/ and dev/ stay as long as the mount
		switch {
		case name == "sys" && m.src.Sys != nil:
			e.Node = m.inodes.ref(m.src.Sys.Root(), nil)
		case name == "dev" && m.src.Dev != nil:
			e.Node = devDirID
		default:
			r.Reply(syscall.ENOENT)
			return
		}
	case devDirID:
		m.nlookup.Add(1)
		c, err := m.src.Dev.Lookup(name)
		if err != nil {
			r.Reply(errno(err))
			return
		}
		m.watchCdev(c)
		e.Node = m.inodes.ref(nil, c)
		e.EntryTime = m.cfg.entryValid
	default:
		m.nlookup.Add(1)
		dir := m.inodes.get(r.Node)
		if dir == nil || dir.n == nil {
			r.Reply(syscall.ENOTDIR)
			return
		}
		if dir.n.Kind() != kernfs.KindDir {
			r.Reply(syscall.ENOTDIR)
			return
		}
		if !dir.n.Visible() {
			r.Reply(syscall.ENOENT)
			return
		}
		p := dir.n.Path()
		if p != "/" {
			p += "/"
		}
		c, err := m.src.Sys.Lookup(p + name)
		if err != nil {
			r.Reply(errno(err))
			return
		}
		if c.Parent() != dir.n { // the directory was replaced while we looked
			r.Reply(syscall.ENOENT)
			return
		}
		e.Node = m.inodes.ref(c, nil)
		e.EntryTime = m.cfg.entryValid
	}
	e.AttrTime = attrValid
	_ = m.attr(e.Node, &e.Attr) // e.Node is referenced just above: in the table, so no ESTALE
	r.ReplyEntry(&e)
}

// setattr accepts what sysfs accepts without effect — truncation (a
// shell's `>` truncates before it writes) and times — and refuses changes
// of mode or owner with EPERM: kernfs modes are fixed by the provider.
// A directory refuses truncation with EISDIR.
func (m *Server) setattr(r *fuse.Request) {
	in, err := r.Setattr()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	var a fuse.Attr
	if e := m.attr(r.Node, &a); e != 0 {
		r.Reply(e)
		return
	}
	if in.Valid&(fuse.SetattrMode|fuse.SetattrUID|fuse.SetattrGID) != 0 {
		r.Reply(syscall.EPERM)
		return
	}
	if in.Valid&fuse.SetattrSize != 0 && a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		r.Reply(syscall.EISDIR)
		return
	}
	r.ReplyAttr(&a, attrValid)
}

// readlink returns a symlink's target relative to its directory.
func (m *Server) readlink(r *fuse.Request) {
	in := m.inodes.get(r.Node)
	if in == nil || in.n == nil {
		r.Reply(syscall.EINVAL)
		return
	}
	s, err := m.src.Sys.Readlink(in.n)
	if err != nil {
		r.Reply(errno(err))
		return
	}
	r.ReplyData([]byte(s))
}

// dirHandle is a directory opened for listing: the entries as they were
// at the open (as a getdents stream of a changing directory may be).
type dirHandle struct {
	ents []dirEnt
}

type dirEnt struct {
	name string
	typ  uint32
}

// opendir opens a directory: the root, dev/, or a kernfs directory that
// still resolves.
func (m *Server) opendir(r *fuse.Request) {
	var ents []dirEnt
	switch r.Node {
	case rootID:
		if m.src.Dev != nil {
			ents = append(ents, dirEnt{"dev", fuse.DTDir})
		}
		if m.src.Sys != nil {
			ents = append(ents, dirEnt{"sys", fuse.DTDir})
		}
	case devDirID:
		for _, n := range m.src.Dev.Names() {
			ents = append(ents, dirEnt{n, fuse.DTReg})
		}
	default:
		in := m.inodes.get(r.Node)
		if in == nil || in.n == nil || in.n.Kind() != kernfs.KindDir {
			r.Reply(syscall.ENOTDIR)
			return
		}
		if !in.n.Visible() {
			r.Reply(syscall.ENOENT)
			return
		}
		kents, err := m.src.Sys.Readdir(in.n)
		if err != nil {
			r.Reply(errno(err))
			return
		}
		ents = make([]dirEnt, len(kents))
		for i, e := range kents {
			ents[i] = dirEnt{e.Name, direntType(e.Kind)}
		}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		r.Reply(syscall.ENODEV)
		return
	}
	m.nextFH++
	fh := m.nextFH
	m.dirs[fh] = &dirHandle{ents: ents}
	m.mu.Unlock()
	r.ReplyOpen(fh, 0)
}

func direntType(k kernfs.Kind) uint32 {
	switch k {
	case kernfs.KindDir:
		return fuse.DTDir
	case kernfs.KindSymlink:
		return fuse.DTLink
	}
	return fuse.DTReg
}

// readdir lists from the offset the kernel passes back: the index of the
// next entry. An entry's inode number is a placeholder (never 0, which
// readdir(3) skips); stat finds the real one.
func (m *Server) readdir(r *fuse.Request) {
	in, err := r.Read()
	if err != nil {
		r.Reply(syscall.EINVAL)
		return
	}
	m.mu.Lock()
	d := m.dirs[in.Handle]
	m.mu.Unlock()
	if d == nil {
		r.Reply(syscall.EBADF)
		return
	}
	buf := r.ReadBuffer(int(in.Size))[:0]
	for i := int(min(in.Offset, int64(len(d.ents)))); i < len(d.ents); i++ {
		var ok bool
		buf, ok = fuse.AppendDirent(buf, int(in.Size), uint64(i)+firstID<<32, int64(i+1), d.ents[i].typ, d.ents[i].name)
		if !ok {
			break
		}
	}
	r.ReplyRead(len(buf))
}

// accessMode is the os.O_RDONLY, os.O_WRONLY or os.O_RDWR of open flags.
func accessMode(fl uint32) int {
	switch fl & syscall.O_ACCMODE {
	case syscall.O_RDWR:
		return os.O_RDWR
	case syscall.O_WRONLY:
		return os.O_WRONLY
	}
	return os.O_RDONLY
}
