package fusefs

import (
	"context"
	"syscall"

	"bazil.org/fuse"
	bfs "bazil.org/fuse/fs"

	"github.com/sever-dev/sever/chardev"
)

// devMode is the mode of a file under dev/: a regular file, read and
// written by its owner (the serving user) and group. It cannot be a
// character special file: the kernel would open the real device of that
// number instead of asking the server.
const devMode = 0o660

// devDir is dev/: the live char devices of the registry, by name.
type devDir struct{ m *Server }

var (
	_ bfs.Node                = devDir{}
	_ bfs.NodeRequestLookuper = devDir{}
	_ bfs.HandleReadDirAller  = devDir{}
	_ bfs.NodeSetattrer       = devDir{}
)

func (d devDir) Attr(ctx context.Context, a *fuse.Attr) error { return d.m.syntheticDirAttr(a) }

// Lookup finds a live char device. Its entry is cached for the mount's
// entry validity, and invalidated as soon as the device's unregistration
// begins (a watcher per char device the kernel was told of waits for
// that), so the name stops resolving at once, as a kernfs node's does.
func (d devDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (bfs.Node, error) {
	d.m.nlookup.Add(1)
	c, err := d.m.src.Dev.Lookup(req.Name)
	if err != nil {
		return nil, errno(err)
	}
	d.m.watchCdev(c)
	resp.EntryValid = d.m.cfg.entryValid
	return devNode{d.m, c}, nil
}

// ReadDirAll lists the registry's Names.
func (d devDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	names := d.m.src.Dev.Names()
	out := make([]fuse.Dirent, len(names))
	for i, n := range names {
		out[i] = fuse.Dirent{Name: n, Type: fuse.DT_File}
	}
	return out, nil
}

func (d devDir) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	return setattrDir(req)
}

// devNode is one char device under dev/. Like node it is a comparable
// value: the same *chardev.Cdev is always the same FUSE node, and a device
// registered again under the same name is a new one.
type devNode struct {
	m *Server
	c *chardev.Cdev
}

var (
	_ bfs.Node          = devNode{}
	_ bfs.NodeOpener    = devNode{}
	_ bfs.NodeSetattrer = devNode{}
	_ bfs.NodeFsyncer   = devNode{}
)

// Attr reports a regular file of mode devMode and size 0. The attributes
// never change, also after the device is unregistered.
func (x devNode) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Valid = attrValid
	a.Mode = devMode
	a.Uid, a.Gid = x.m.uid, x.m.gid
	return nil
}

// Open opens the char device (chardev.Cdev.Open) with the open's access
// mode and O_NONBLOCK, as one chardev.File served with direct I/O and
// without a file position (pread and pwrite fail with ESPIPE). A device
// whose unregistration has begun is no longer in dev/: opening a name the
// kernel still held fails with ENOENT.
func (x devNode) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (bfs.Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, syscall.EINTR
	}
	if x.c.Err() != nil {
		return nil, syscall.ENOENT
	}
	flag := accessMode(req.Flags)
	if req.Flags&fuse.OpenNonblock != 0 {
		flag |= syscall.O_NONBLOCK
	}
	f, err := x.c.Open(flag)
	if err != nil {
		return nil, errno(err)
	}
	h := &handle{m: x.m, s: cdevStream{f}}
	if !x.m.track(h) {
		f.Close()
		return nil, fuse.Errno(syscall.ENODEV)
	}
	resp.Flags |= fuse.OpenDirectIO | fuse.OpenNonSeekable
	return h, nil
}

// Setattr accepts truncation (a shell's `>`) and times without effect, as
// a char device does, and refuses changes of mode or owner with EPERM.
func (x devNode) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if req.Valid.Mode() || req.Valid.Uid() || req.Valid.Gid() {
		return syscall.EPERM
	}
	return nil
}

// Fsync does nothing: there is nothing to write back.
func (x devNode) Fsync(ctx context.Context, req *fuse.FsyncRequest) error { return nil }

// watchCdev starts, once per char device, a goroutine that invalidates the
// device's dev/ entry when its unregistration begins. It stops at Close.
// It is called only from a request handler, so never after Close began
// waiting for watchers.
func (m *Server) watchCdev(c *chardev.Cdev) {
	m.mu.Lock()
	if _, ok := m.cdevs[c]; ok || m.closed {
		m.mu.Unlock()
		return
	}
	m.cdevs[c] = struct{}{}
	m.watchers.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.watchers.Done()
		select {
		case <-c.Severing():
			m.invalidate(devDir{m}, c.Name())
		case <-m.ctx.Done():
		}
		m.mu.Lock()
		delete(m.cdevs, c)
		m.mu.Unlock()
	}()
}
