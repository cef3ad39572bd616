package drvhost

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// Service is what a hosted device offers in-process consumers, published
// as a device.Provider[Service] named "host" on the device's machine-side
// shell. A consumer calls it inside Handle.Do, so the call crosses the
// process boundary inside the provider's active reference: the device's
// removal waits for it, and a host's death ends it (see Supervisor).
//
//	h, _ := sup.Provider("widget").Open("my-driver")
//	err := h.Do(func(s drvhost.Service) error {
//		out, err := s.Call(ctx, "echo", []byte("hi"))
//		...
//	})
type Service interface {
	// Call runs the device's call named method in the host with arg and
	// returns its result. It returns an error wrapping sever.ErrNoDevice
	// if the host died or is going, or removed the device (never waiting
	// for a dead or hung host beyond the host's health deadline, nor for a
	// device the host reported removed), ctx's error if ctx ended first,
	// and otherwise the host's error with its errno (errors.Is holds for
	// the matching sever error and syscall.Errno).
	Call(ctx context.Context, method string, arg []byte) ([]byte, error)
}

// generation is one run of a host process and everything the machine
// registered for it. Its state only moves forward:
//
//	starting ──hello──▶ live ──death or stop──▶ ended
//
// Its context is the parent of every call into the host: cancelling it
// (the first step of a surprise removal) makes every call in flight
// return ErrNoDevice at once, so the removal's drain never waits for a
// host that will not answer.
type generation struct {
	sup  *Supervisor
	n    uint64
	ctx  context.Context
	stop context.CancelFunc

	proc   *os.Process
	exited chan struct{} // closed when the process was reaped
	conn   *grpc.ClientConn
	sock   string
	owner  *sever.Owner
	root   *device.Device
	pid    int
	t0     time.Time

	mu    sync.Mutex
	devs  map[string]*remoteDevice
	files map[uint64]remoteFile
	gone  map[string]bool // devices the host said it removed

	dieOnce sync.Once
	dead    chan struct{}
	reason  string
	hung    bool  // the death was a missed health deadline
	exitErr error // cmd.Wait's, once exited is closed
	wg      sync.WaitGroup
}

// die records the first reason the generation ended; the supervisor's
// loop takes it from there.
func (g *generation) die(reason string, hung bool) {
	g.dieOnce.Do(func() {
		g.reason, g.hung = reason, hung
		close(g.dead)
	})
}

// failed reports whether the generation's end was a failure: anything but
// the process exiting with status 0 by itself. Valid after end.
func (g *generation) failed() bool { return g.hung || g.exitErr != nil }

// errGone is the error a call into a host that is gone returns.
func (g *generation) errGone(what string) error {
	return &sever.ObjectError{Object: fmt.Sprintf("host %s (generation %d) %s", g.sup.cfg.Name, g.n, what), Err: sever.ErrNoDevice}
}

// invoke calls the host's method name inside both the generation's
// context and the caller's ctx: whichever ends first ends the call.
func (g *generation) invoke(ctx context.Context, name string, req, resp any) error {
	return g.invokeIn(g.ctx, ctx, name, req, resp)
}

// invokeIn calls the host's method name inside both life, a context that
// ends when what the call is for is gone (the generation, or one of its
// devices), and the caller's ctx: whichever ends first ends the call, with
// ErrNoDevice for life and ctx's error for ctx.
func (g *generation) invokeIn(life, ctx context.Context, name string, req, resp any) error {
	cctx, cancel := context.WithCancel(life)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	if err := g.conn.Invoke(cctx, method(name), req, resp); err != nil {
		if ctx.Err() != nil && life.Err() == nil {
			return ctx.Err()
		}
		return g.errGone(name)
	}
	return nil
}

// remoteDevice is the machine's side of one device a host provides. Its
// context, a child of the generation's, ends when the host reports the
// device removed (or the generation ends): every call into the host for
// the device runs inside it.
type remoteDevice struct {
	g      *generation
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	dev    *device.Device
	prov   *device.Provider[Service]
	nodes  []*kernfs.Node // top-level mirrored nodes
}

// invoke calls the host's method name for the device: see invokeIn.
func (rd *remoteDevice) invoke(ctx context.Context, name string, req, resp any) error {
	return rd.g.invokeIn(rd.ctx, ctx, name, req, resp)
}

// Call implements Service.
func (rd *remoteDevice) Call(ctx context.Context, m string, arg []byte) ([]byte, error) {
	var r dataResp
	if err := rd.invoke(ctx, "Call", &callReq{Device: rd.name, Method: m, Arg: arg}, &r); err != nil {
		return nil, err
	}
	return r.Data, r.Err.err()
}

// register builds the machine's side of the host's devices under
// /devices/host-<name>: one device per export, its attribute tree
// mirrored, its char devices registered, its Service provided.
func (g *generation) register(ctx context.Context, descs []deviceDesc) error {
	core := g.sup.core
	root, err := core.Register(ctx, device.Config{Name: "host-" + g.sup.cfg.Name, Owner: g.owner})
	if err != nil {
		return err
	}
	g.root = root
	for _, d := range descs {
		if err := g.registerDevice(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

func (g *generation) registerDevice(ctx context.Context, desc deviceDesc) error {
	core := g.sup.core
	dev, err := core.Register(ctx, device.Config{Name: desc.Name, Parent: g.root, Owner: g.owner})
	if err != nil {
		return err
	}
	rd := &remoteDevice{g: g, name: desc.Name, dev: dev}
	// Cancelled by unplug, or with the generation's context.
	rd.ctx, rd.cancel = context.WithCancel(g.ctx)
	if err := rd.mirror(desc.Nodes); err != nil {
		return err
	}
	for _, name := range desc.Cdevs {
		if _, err := chardev.Register(dev, chardev.Config{Name: g.sup.cfg.CdevPrefix + name, Owner: g.owner, Ops: rd.cdevOps(name)}); err != nil {
			return err
		}
	}
	if rd.prov, err = device.NewProvider[Service](dev, "host", rd); err != nil {
		return err
	}
	g.mu.Lock()
	if g.gone[desc.Name] {
		// The host removed it while it was being registered.
		g.mu.Unlock()
		g.unplug(rd)
		return nil
	}
	g.devs[desc.Name] = rd
	g.mu.Unlock()
	return nil
}

// deviceGone is the host's report that it removed its device name: the
// machine's side of it is removed as a surprise unplug (see unplug). A
// name the generation has not registered yet is remembered, for
// registerDevice; one it never will is ignored.
func (g *generation) deviceGone(name string) {
	g.mu.Lock()
	g.gone[name] = true
	rd := g.devs[name]
	delete(g.devs, name)
	g.mu.Unlock()
	if rd != nil {
		g.unplug(rd)
	}
}

// unplug removes the machine's side of rd, whose host-side device is gone,
// through the one removal path, as the host's death does for all of them:
// its context is cancelled first (calls in flight into the host for it
// return ErrNoDevice at once, so the drain never waits for a device that
// will not answer), then device.Unregister severs its files (pollers wake
// EventErr|EventHup, open files stay shells) and revokes its provider
// (handles are shells). The removal runs on its own goroutine, which the
// generation's end waits for: the Watch stream goes on meanwhile.
func (g *generation) unplug(rd *remoteDevice) {
	rd.cancel()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
		defer cancel()
		// As in teardown: a removal that misses removeTimeout goes on in
		// the background and the machine's checker records what it
		// waited for; nobody is left to take the error.
		_ = rd.dev.Unregister(ctx)
	}()
}

// mirror makes the host's attribute tree in the device's directory. Every
// Show and Store runs inside its node's active reference and crosses to
// the host from there, so removing the node waits for it. A name the
// device's directory already has (uevent) is left to the machine's own.
func (rd *remoteDevice) mirror(nodes []nodeDesc) error {
	t := rd.g.sup.core.Sysfs()
	dirs := map[string]*kernfs.Node{"": rd.dev.Dir()}
	var hidden []*kernfs.Node
	for _, nd := range nodes {
		parent := dirs[path.Dir(nd.Path)]
		if path.Dir(nd.Path) == "." {
			parent = dirs[""]
		}
		if parent == nil {
			continue // under a directory skipped for its name
		}
		name := path.Base(nd.Path)
		mode := fs.FileMode(nd.Mode).Perm()
		if nd.Dir {
			top := parent == rd.dev.Dir()
			n, err := t.AddDir(parent, kernfs.Dir{Name: name, Mode: mode, Owner: rd.g.owner, Hidden: top})
			if err != nil {
				continue
			}
			dirs[nd.Path] = n
			if top {
				rd.nodes = append(rd.nodes, n)
				hidden = append(hidden, n)
			}
			continue
		}
		a := kernfs.Attr{Name: name, Mode: mode, Owner: rd.g.owner}
		rel := nd.Path
		if mode&0o444 != 0 {
			a.Show = func(c *kernfs.Call, buf []byte) ([]byte, error) {
				var r dataResp
				if err := rd.invoke(c.Context(), "ReadAttr", &attrReq{Device: rd.name, Path: rel}, &r); err != nil {
					return buf, err
				}
				if err := r.Err.err(); err != nil {
					return buf, err
				}
				return append(buf, r.Data...), nil
			}
		}
		if mode&0o222 != 0 {
			a.Store = func(c *kernfs.Call, v any) error {
				var r empty
				if err := rd.invoke(c.Context(), "WriteAttr", &attrReq{Device: rd.name, Path: rel, Data: []byte(v.(string) + "\n")}, &r); err != nil {
					return err
				}
				return r.Err.err()
			}
		}
		n, err := t.AddAttr(parent, a)
		if err != nil {
			continue
		}
		if parent == rd.dev.Dir() {
			rd.nodes = append(rd.nodes, n)
		}
	}
	// The device's removal path severs the mirrored nodes with its files.
	if _, err := rd.dev.AddSeverable("mirrored attributes", device.StageFiles, func(ctx context.Context) error {
		var first error
		for i := len(rd.nodes) - 1; i >= 0; i-- {
			if err := t.Remove(ctx, rd.nodes[i]); err != nil && first == nil {
				first = err
			}
		}
		return first
	}); err != nil {
		return err
	}
	for _, n := range hidden {
		if err := t.Activate(n); err != nil {
			return err
		}
	}
	return nil
}

// remoteFile is a char device file open in the host, as the Watch stream
// finds it: the machine's char device to notify, and its device.
type remoteFile struct {
	cd *chardev.Cdev
	rd *remoteDevice
}

// proxyFile is the machine's side of a char device file the host opened.
type proxyFile struct{ id uint64 }

// cdevOps are the machine-side char device's Ops: each crosses to the
// host inside the char device's active reference. The host's file is
// non-blocking; a read with nothing to read returns EAGAIN and the
// framework waits, outside the device, for the host's readiness event
// (see hostFile), which the Watch stream turns into Cdev.Notify.
//
// Every op but Release runs inside the device's context; Release, the
// machine's close, runs inside the generation's, so that the host's file
// is closed even after the host removed the device.
func (rd *remoteDevice) cdevOps(name string) chardev.Ops {
	g := rd.g
	return chardev.Ops{
		Open: func(c *chardev.Call) (any, error) {
			var r openResp
			if err := rd.invoke(context.Background(), "Open", &openReq{Cdev: name, Flag: os.O_RDWR}, &r); err != nil { // the machine checks the access mode
				return nil, err
			}
			if err := r.Err.err(); err != nil {
				return nil, err
			}
			g.mu.Lock()
			g.files[r.File] = remoteFile{cd: c.Cdev(), rd: rd}
			g.mu.Unlock()
			return &proxyFile{id: r.File}, nil
		},
		Read: func(c *chardev.Call, buf []byte) (int, error) {
			var r dataResp
			if err := rd.invoke(context.Background(), "Read", &fileReq{File: c.Private().(*proxyFile).id, N: len(buf)}, &r); err != nil {
				return 0, err
			}
			return copy(buf, r.Data), r.Err.err()
		},
		Write: func(c *chardev.Call, data []byte) (int, error) {
			var r dataResp
			if err := rd.invoke(context.Background(), "Write", &fileReq{File: c.Private().(*proxyFile).id, Data: data}, &r); err != nil {
				return 0, err
			}
			return r.N, r.Err.err()
		},
		Ioctl: func(c *chardev.Call, cmd chardev.Cmd, arg []byte) (int, error) {
			var r dataResp
			if err := rd.invoke(context.Background(), "Ioctl", &fileReq{File: c.Private().(*proxyFile).id, Cmd: uint32(cmd), Data: arg}, &r); err != nil {
				return 0, err
			}
			if err := r.Err.err(); err != nil {
				return 0, err
			}
			copy(arg, r.Data)
			return r.N, nil
		},
		Poll: func(c *chardev.Call) sever.Events {
			var r pollResp
			if err := rd.invoke(context.Background(), "Poll", &fileReq{File: c.Private().(*proxyFile).id}, &r); err != nil {
				// The host is dead or dying, but its char device is not
				// severed yet: an error, not yet a hang-up. The hang-up
				// comes with the sever, which reports it with ENODEV (a
				// hang-up reported here came with a nil error, breaking
				// that promise; sever stress's host-kill found it).
				return sever.EventErr
			}
			// Likewise a hang-up from the host's side (its file gone, its
			// machine quiescing) is an error here until the sever.
			ev := sever.Events(r.Events)
			if ev&sever.EventHup != 0 {
				ev = ev&^sever.EventHup | sever.EventErr
			}
			return ev
		},
		Release: func(c *chardev.Call) {
			id := c.Private().(*proxyFile).id
			g.mu.Lock()
			delete(g.files, id)
			g.mu.Unlock()
			var r empty
			// Release returns nothing, and a dead host closed it already.
			_ = g.invoke(context.Background(), "Close", &fileReq{File: id}, &r)
		},
	}
}

// watch holds the host's Watch stream open for the generation's life,
// turning its events into readiness of open files and removals of devices
// the host removed itself (deviceGone). The stream breaking while the
// generation is live is the host's death: the kernel closed its end of the
// socket (kill -9, a panic, an exit).
func (g *generation) watch(st grpc.ClientStream) {
	defer g.wg.Done()
	for {
		var ev event
		if err := st.RecvMsg(&ev); err != nil {
			if g.ctx.Err() == nil {
				g.die("connection to the host broken: "+strings.TrimSpace(err.Error()), false)
			}
			return
		}
		if ev.Gone != "" {
			g.deviceGone(ev.Gone)
			continue
		}
		g.mu.Lock()
		rf, ok := g.files[ev.File]
		g.mu.Unlock()
		// A file of a device the host removed hangs up in the host; on the
		// machine the hang-up is the sever's to report, with ErrNoDevice,
		// and deviceGone has begun it: a Notify now would only wake its
		// pollers to an EventErr without the error.
		if ok && rf.rd.ctx.Err() == nil {
			rf.cd.Notify(sever.Events(ev.Events))
		}
	}
}
