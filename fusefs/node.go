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

// root is the file system.
type root struct{ m *Server }

func (r root) Root() (bfs.Node, error) { return top(r), nil }

// top is the mount's root directory: sys/ and dev/, those of the two
// whose source was given to Mount.
type top struct{ m *Server }

var (
	_ bfs.Node                = top{}
	_ bfs.NodeRequestLookuper = top{}
	_ bfs.HandleReadDirAller  = top{}
	_ bfs.NodeSetattrer       = top{}
)

func (t top) Attr(ctx context.Context, a *fuse.Attr) error { return t.m.syntheticDirAttr(a) }

// syntheticDirAttr describes a directory the mount makes itself (the root,
// dev/): mode 0755, owned by the serving user, unchanging for the mount's
// life.
func (m *Server) syntheticDirAttr(a *fuse.Attr) error {
	a.Valid = attrValid
	a.Mode = os.ModeDir | 0o755
	a.Uid, a.Gid = m.uid, m.gid
	return nil
}

func (t top) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (bfs.Node, error) {
	resp.EntryValid = attrValid // sys/ and dev/ stay as long as the mount
	switch {
	case req.Name == "sys" && t.m.src.Sys != nil:
		return node{t.m, t.m.src.Sys.Root()}, nil
	case req.Name == "dev" && t.m.src.Dev != nil:
		return devDir(t), nil
	}
	return nil, syscall.ENOENT
}

func (t top) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	var out []fuse.Dirent
	if t.m.src.Dev != nil {
		out = append(out, fuse.Dirent{Name: "dev", Type: fuse.DT_Dir})
	}
	if t.m.src.Sys != nil {
		out = append(out, fuse.Dirent{Name: "sys", Type: fuse.DT_Dir})
	}
	return out, nil
}

func (t top) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return setattrDir(req)
}

// setattrDir answers a setattr of a directory the mount made: times are
// accepted without effect, anything else refused as kernfs refuses it.
func setattrDir(req *fuse.SetattrRequest) error {
	if req.Valid.Mode() || req.Valid.Uid() || req.Valid.Gid() {
		return syscall.EPERM
	}
	if req.Valid.Size() {
		return fuse.Errno(syscall.EISDIR)
	}
	return nil
}

// node is one kernfs node as the FUSE server sees it. It is a comparable
// value, so the same kernfs node always maps to the same FUSE node ID
// without a table of our own; the server forgets it when the kernel does.
//
// The kernel caches directory entries for the mount's entry validity
// (EntryTimeout): the tree's OnRemove hook invalidates a node's entry as
// soon as the node stops resolving, so a removed path fails with ENOENT at
// once. Negative entries are not cached (Lookup's ENOENT is an error
// reply, which the kernel keeps with zero validity), so a node added or
// activated is found at once too. Attributes are cached for attrValid: a
// kernfs node's mode, kind and size never change, and the same kernfs
// node is always the same FUSE node, so they cannot go stale.
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

// Attr reports the node's mode bits and size as kernfs has them: a text
// attribute is a page long, as in sysfs, a binary attribute as long as it
// declared (0 if it did not; reads go to the attribute regardless, with
// direct I/O). Attributes of a removed node still answer, as fstat on an
// unlinked file does.
func (x node) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Valid = attrValid
	a.Mode = x.n.Mode()
	a.Uid, a.Gid = x.m.uid, x.m.gid
	switch x.n.Kind() {
	case kernfs.KindAttr, kernfs.KindBin:
		a.Size = uint64(x.n.Size())
	case kernfs.KindSymlink:
		if target, err := x.m.src.Sys.Readlink(x.n); err == nil {
			a.Size = uint64(len(target))
		}
	}
	return nil
}

// Lookup finds name in the directory. It answers ENOENT once the directory
// or the child is being removed, and for a child of the same name that
// replaced the one the kernel knew under another directory node.
func (x node) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (bfs.Node, error) {
	x.m.nlookup.Add(1)
	resp.EntryValid = x.m.cfg.entryValid
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
	c, err := x.m.src.Sys.Lookup(p + req.Name)
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
	f, err := x.m.src.Sys.OpenNode(x.n, accessMode(req.Flags))
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

// accessMode is the os.O_RDONLY, os.O_WRONLY or os.O_RDWR of an open.
func accessMode(fl fuse.OpenFlags) int {
	switch {
	case fl.IsReadWrite():
		return os.O_RDWR
	case fl.IsWriteOnly():
		return os.O_WRONLY
	}
	return os.O_RDONLY
}

// ReadDirAll lists a directory from kernfs.Readdir.
func (x node) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	ents, err := x.m.src.Sys.Readdir(x.n)
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
	s, err := x.m.src.Sys.Readlink(x.n)
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
