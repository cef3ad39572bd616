package fusefs

import (
	"context"
	"os"
	"syscall"
	"time"

	"bazil.org/fuse"
	bfs "bazil.org/fuse/fs"

	"github.com/sever-dev/sever/kernfs"
)

// root is the file system: the tree's root directory.
type root struct{ m *Server }

func (r root) Root() (bfs.Node, error) { return node{r.m, r.m.tree.Root()}, nil }

// node is one kernfs node as the FUSE server sees it. It is a comparable
// value, so the same kernfs node always maps to the same FUSE node ID
// without a table of our own; the server forgets it when the kernel does.
//
// The kernel caches no directory entry: entries are returned with zero
// validity, so every path walk asks Lookup again and a removed node stops
// resolving at once (kernfs has no removal notification that would let
// the mount invalidate cached entries instead). Attributes are cached for
// attrValid: a kernfs node's mode, kind and size never change, and the
// same kernfs node is always the same FUSE node, so they cannot go stale.
type node struct {
	m *Server
	n *kernfs.Node
}

// attrValid is how long the kernel may cache a node's attributes. Without
// it every path component costs a GETATTR besides its LOOKUP (the
// kernel's permission check wants fresh attributes).
const attrValid = time.Hour

var (
	_ bfs.Node                = node{}
	_ bfs.NodeRequestLookuper = node{}
	_ bfs.NodeOpener          = node{}
	_ bfs.NodeReadlinker      = node{}
	_ bfs.NodeSetattrer       = node{}
	_ bfs.NodeFsyncer         = node{}
	_ bfs.HandleReadDirAller  = node{}
)

// Attr reports the node's mode bits as kernfs has them. A text attribute
// is a page long, as in sysfs; a binary attribute's size is not exposed by
// kernfs and is reported as 0 (reads go to the attribute regardless, with
// direct I/O). Attributes of a removed node still answer, as fstat on an
// unlinked file does.
func (x node) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Valid = attrValid
	a.Mode = x.n.Mode()
	a.Uid, a.Gid = x.m.uid, x.m.gid
	switch x.n.Kind() {
	case kernfs.KindAttr:
		a.Size = kernfs.PageSize
	case kernfs.KindSymlink:
		if target, err := x.m.tree.Readlink(x.n); err == nil {
			a.Size = uint64(len(target))
		}
	}
	return nil
}

// Lookup finds name in the directory. It answers ENOENT once the directory
// or the child is being removed, and for a child of the same name that
// replaced the one the kernel knew under another directory node.
func (x node) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (bfs.Node, error) {
	resp.EntryValid = 0
	if x.n.Kind() != kernfs.KindDir {
		return nil, fuse.Errno(syscall.ENOTDIR)
	}
	if !x.n.Visible() {
		return nil, syscall.ENOENT
	}
	p := x.n.Path()
	if p != "/" {
		p += "/"
	}
	c, err := x.m.tree.Lookup(p + req.Name)
	if err != nil {
		return nil, errno(err)
	}
	if c.Parent() != x.n { // the directory was replaced while we looked
		return nil, syscall.ENOENT
	}
	return node{x.m, c}, nil
}

// Open opens a directory for listing, or an attribute as one kernfs.File
// with direct I/O.
func (x node) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (bfs.Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, syscall.EINTR
	}
	if req.Dir {
		if x.n.Kind() != kernfs.KindDir {
			return nil, fuse.Errno(syscall.ENOTDIR)
		}
		if !x.n.Visible() {
			return nil, syscall.ENOENT
		}
		return x, nil
	}
	var flag int
	switch {
	case req.Flags.IsReadWrite():
		flag = os.O_RDWR
	case req.Flags.IsWriteOnly():
		flag = os.O_WRONLY
	default:
		flag = os.O_RDONLY
	}
	f, err := x.m.tree.OpenNode(x.n, flag)
	if err != nil {
		return nil, errno(err)
	}
	h := &handle{m: x.m, s: kernfsStream{f}}
	if !x.m.track(h) {
		f.Close()
		return nil, fuse.Errno(syscall.ENODEV)
	}
	resp.Flags |= fuse.OpenDirectIO
	return h, nil
}

// ReadDirAll lists a directory from kernfs.Readdir.
func (x node) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	ents, err := x.m.tree.Readdir(x.n)
	if err != nil {
		return nil, errno(err)
	}
	out := make([]fuse.Dirent, len(ents))
	for i, e := range ents {
		out[i] = fuse.Dirent{Name: e.Name, Type: direntType(e.Kind)}
	}
	return out, nil
}

func direntType(k kernfs.Kind) fuse.DirentType {
	switch k {
	case kernfs.KindDir:
		return fuse.DT_Dir
	case kernfs.KindSymlink:
		return fuse.DT_Link
	}
	return fuse.DT_File
}

// Readlink returns a symlink's target relative to its directory.
func (x node) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (string, error) {
	s, err := x.m.tree.Readlink(x.n)
	if err != nil {
		return "", errno(err)
	}
	return s, nil
}

// Setattr accepts what sysfs accepts without effect — truncation (a
// shell's `>` truncates before it writes) and times — and refuses changes
// of mode or owner with EPERM: kernfs modes are fixed by the provider.
func (x node) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if req.Valid.Mode() || req.Valid.Uid() || req.Valid.Gid() {
		return syscall.EPERM
	}
	if req.Valid.Size() && x.n.Kind() == kernfs.KindDir {
		return fuse.Errno(syscall.EISDIR)
	}
	return nil
}

// Fsync does nothing, as on sysfs: there is nothing to write back.
func (x node) Fsync(ctx context.Context, req *fuse.FsyncRequest) error { return nil }
