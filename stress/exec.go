package stress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/subsys/block"
	"github.com/sever-dev/sever/subsys/gpio"
	"github.com/sever-dev/sever/subsys/i2c"
)

// maxHandles bounds each kind of handle a worker holds at once.
const maxHandles = 6

// waitFor bounds the waits of poll and blocking-read operations: long
// enough to be woken by another worker, short enough to keep the mix fast.
const waitFor = 300 * time.Microsecond

// worker is one goroutine of the run: it draws its operations from its own
// generator and holds its own handles — open attribute files and char
// devices, requested IRQs — which only it touches. At the end of a round it
// closes every handle it still holds.
type worker struct {
	h  *harness
	r  *rig
	id int

	sys  []*sysFile
	cdev []*cdevFile
	irqs []*irqReq

	counts [numKinds]KindCount
	buf    [512]byte

	mu    sync.Mutex // guards the fields below, read by the observer and the watchdog
	step  int64
	op    Op
	start time.Time
	busy  bool
	last  [16]Op // the most recent operations, oldest first when rotated by step
}

// sysFile is an open attribute file. gone records that an operation on it
// returned ENODEV: from then on it is a shell, and every later operation
// but Close must say so.
type sysFile struct {
	f    *kernfs.File
	path string
	gone bool
}

// cdevFile is an open char device.
type cdevFile struct {
	f      *chardev.File
	name   string
	stress *slot // the slot of a stress device, nil for a gpiochip
	gone   bool
	lined  bool // a gpiochip open with a line requested
}

// irqReq is a requested IRQ and the fault planted in its handler.
type irqReq struct {
	irq  cp2112.IRQ
	next *atomic.Uint32
}

func (w *worker) begin(step int64, op Op) {
	w.mu.Lock()
	w.step, w.op, w.start, w.busy = step, op, time.Now(), true
	w.last[step%int64(len(w.last))] = op
	w.mu.Unlock()
}

func (w *worker) end() {
	w.mu.Lock()
	w.busy = false
	w.mu.Unlock()
}

// exec runs op, counts it and checks what it returned. An operation that
// would find nothing to act on is first retargeted to one that makes
// something to act on (and counts as that one), so the mix does not drift
// towards no-ops.
func (w *worker) exec(ctx context.Context, op Op) {
	op.Kind = w.retarget(op)
	start := time.Now()
	did, err := w.do(ctx, op)
	c := &w.counts[op.Kind]
	c.N++
	switch {
	case !did:
		c.Skipped++
	case err == nil:
		c.OK++
	default:
		c.Failed++
		w.errnoCheck(op, err)
	}
	if d := time.Since(start); d > c.Max {
		c.Max = d
	}
	if l := w.r.cfg.Live; l != nil {
		l.Ops.Add(1)
	}
}

// errnoCheck records an error that carries no errno: every error sever
// returns must wrap the errno it means (DESIGN.md, Naming), so a process
// on the mount sees the same failure a Go caller does.
func (w *worker) errnoCheck(op Op, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return
	}
	var e syscall.Errno
	if !errors.As(err, &e) {
		w.h.promise(w, "%s: error without an errno: %v", op, err)
	}
}

// retarget returns the kind op runs as: op.Kind, unless the machine or
// the worker holds nothing that kind acts on now, in which case it is the
// kind that makes such a thing — an open for an operation on a handle when
// the worker holds none, a plug for a board operation when every port is
// empty, a bind or an insmod for a block operation when there is no disk,
// an unbind for a bind when every device is bound, a delete for an add
// when every slot is taken and the reverse. It
// depends only on the state the operation finds, so a serial replay
// retargets the same way every time. A few skips remain (a walk that finds
// no file, a bind with every device bound and every driver loaded).
func (w *worker) retarget(op Op) Kind {
	r := w.r
	k := op.Kind
	for range 4 { // each step moves towards a kind that always acts
		switch {
		case k >= KSysRead && k <= KSysClose && len(w.sys) == 0:
			k = KSysOpen
		case k >= KCdevRead && k <= KCdevClose && len(w.cdev) == 0:
			k = KCdevOpen
		case k == KHostKill && r.drv == nil:
			k = KUnplug // no driver host: a local provider's surprise removal
		case k == KCdevOpen && len(r.m.Dev().Names()) == 0:
			k = KAddDevice
		case k == KIRQFree && len(w.irqs) == 0:
			k = KIRQRequest
		case k == KIRQRequest && len(w.irqs) >= maxHandles:
			k = KIRQFree
		case (k == KIRQRequest || k == KEdge || k == KI2C || k == KGPIO) && len(r.boardPorts()) == 0:
			k = KPlug
		case (k == KBlockIO || k == KBlockFreeze || k == KBlockKill) && len(w.disks()) == 0:
			k = KBind
		case k == KBind && len(r.bindable()) == 0 && len(r.unloaded()) > 0:
			k = KReload // a driver to bind comes with its module
		case k == KBind && len(r.bindable()) == 0:
			k = KUnbind // everything is bound and loaded
		case k == KAddDevice && len(r.slotsWith(false)) == 0:
			k = KDelDevice
		case k == KDelDevice && len(r.slotsWith(true)) == 0:
			k = KAddDevice
		default:
			return k
		}
	}
	return k
}

// deadline returns a context bounding a removal or any call that may wait
// for a drain: a sever that needs longer is a check.SeverTimeout.
func (w *worker) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, w.r.cfg.Deadline)
}

func pick[T any](xs []T, a uint32) (T, bool) {
	if len(xs) == 0 {
		var zero T
		return zero, false
	}
	return xs[a%uint32(len(xs))], true
}

// do runs op and reports whether there was anything to do it to.
func (w *worker) do(ctx context.Context, op Op) (bool, error) {
	r := w.r
	switch op.Kind {
	case KPlug:
		p, _ := pick(r.ports, op.A)
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return true, r.plug(ctx, p)
	case KUnplug:
		p, _ := pick(r.ports, op.A)
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return true, r.unplug(ctx, p)
	case KUnbind:
		d, ok := pick(r.devices(), op.A)
		if !ok {
			return false, nil
		}
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		if s := r.slotOf(d); s != nil {
			s.plan.remove.Store(op.C)
		}
		return true, d.Unbind(ctx)
	case KBind:
		// Mostly a device with no driver and a driver to bind; now and
		// then any device, whose bind is then refused (EBUSY) or races
		// an unbind.
		ds := r.bindable()
		if op.B%8 == 0 || len(ds) == 0 {
			ds = r.devices()
		}
		d, ok := pick(ds, op.A)
		if !ok {
			return false, nil
		}
		drv := driverFor(d)
		if drv == nil {
			return false, nil
		}
		if s := r.slotOf(d); s != nil {
			s.plan.probe.Store(op.C)
		}
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return true, d.Bind(ctx, drv)
	case KUnloadTry, KUnloadForce:
		md, _ := pick(r.mods, op.A)
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		if op.Kind == KUnloadForce {
			return true, r.m.Rmmod(ctx, md.name)
		}
		o := r.m.Module(md.name)
		if o == nil {
			return false, nil
		}
		return true, o.Unload(ctx, sever.UnloadTry)
	case KReload:
		// Mostly a module that is gone; now and then any, whose insmod
		// is then refused (EEXIST) or races its rmmod.
		mods := r.unloaded()
		if op.B%4 == 0 || len(mods) == 0 {
			mods = r.mods
		}
		md, _ := pick(mods, op.A)
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return true, r.insmod(ctx, md)
	case KAddDevice:
		s, ok := pick(r.slotsWith(false), op.A)
		if !ok {
			return false, nil
		}
		s.plan.probe.Store(op.C)
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return r.addDevice(ctx, s)
	case KDelDevice:
		s, ok := pick(r.slotsWith(true), op.A)
		if !ok {
			return false, nil
		}
		s.plan.remove.Store(op.C)
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return r.delDevice(ctx, s)
	case KSysOpen:
		return w.sysOpen(op)
	case KSysRead, KSysWrite, KSysPoll, KSysMmap, KSysClose:
		return w.sysOp(ctx, op)
	case KCdevOpen:
		return w.cdevOpen(op)
	case KCdevRead, KCdevWrite, KCdevIoctl, KCdevPoll, KCdevMmap, KCdevClose:
		return w.cdevOp(ctx, op)
	case KSelfRemove:
		return w.selfRemove(ctx, op)
	case KBlockIO, KBlockFreeze, KBlockKill:
		return w.blockOp(ctx, op)
	case KIRQRequest:
		return w.irqRequest(op)
	case KIRQFree:
		return w.irqFree(ctx, op)
	case KEdge:
		return w.edge(op)
	case KI2C:
		return w.i2c(ctx, op)
	case KGPIO:
		return w.gpio(op)
	case KHostKill:
		return w.hostKill(ctx, op)
	}
	return false, nil
}

// starts are where the walk of the attribute tree begins: the root, and
// the directories the devices of the mix live in.
var starts = []string{"/", "/devices", "/bus", "/class", "/block", "/irq", "/devices/usb1", "/devices/stress.0", "/devices/stress.1", "/devices/usb1/1-1", "/devices/usb1/1-2", "/devices/host-" + HostName, "/hosts/" + HostName}

// walk descends the attribute tree from a start chosen by a, choosing
// each entry by the next of a's pseudo-random choices, until it reaches
// something that is not a directory. It returns that path.
func (w *worker) walk(a uint32) (string, bool) {
	t := w.r.m.Sysfs()
	x := a | 1
	next := func() uint32 { // xorshift32: the walk's choices, all from a
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return x
	}
	// A walk that ends in an empty directory, at a start that is gone,
	// or too deep (a symlink loop) starts again with the next choices.
	for range 4 {
		path := starts[next()%uint32(len(starts))]
		n, err := t.Lookup(path)
		if err != nil {
			continue
		}
		for range 12 {
			if n.Kind() != kernfs.KindDir {
				return path, true
			}
			ents, err := t.Readdir(n)
			if err != nil || len(ents) == 0 {
				break
			}
			e := ents[next()%uint32(len(ents))]
			if path == "/" {
				path = ""
			}
			path += "/" + e.Name
			n = e.Node
		}
	}
	return "", false
}

var openFlags = [...]int{os.O_RDONLY, os.O_WRONLY, os.O_RDWR}

// textCommands are what the harness writes to a gpiochip: valid and
// malformed commands of its text protocol.
var textCommands = []string{"request 3 both\n", "request 5 rising\n", "get 2\n", "get 3\nget 4\n", "request 9\n", "frob 1\n", "\x00\x01"}

func (w *worker) sysOpen(op Op) (bool, error) {
	if len(w.sys) >= maxHandles {
		w.closeSys(int(op.B) % len(w.sys))
	}
	path, ok := w.walk(op.A)
	if !ok {
		return false, nil
	}
	f, err := w.r.m.Sysfs().Open(path, openFlags[op.B%3])
	if err != nil {
		return true, err
	}
	w.track(f)
	if strings.HasPrefix(path, "/devices/host-") {
		w.r.files.Add(1)
	}
	w.sys = append(w.sys, &sysFile{f: f, path: path})
	return true, nil
}

// track counts a shell opened and arranges for its collection to be
// counted: a shell still reachable after it was closed and its device
// removed is a leak (see the round's audit).
func (w *worker) track(p any) {
	w.r.shellsOpen.Add(1)
	switch f := p.(type) {
	case *kernfs.File:
		runtime.AddCleanup(f, func(c *atomic.Int64) { c.Add(1) }, &w.r.shellsFreed)
	case *chardev.File:
		runtime.AddCleanup(f, func(c *atomic.Int64) { c.Add(1) }, &w.r.shellsFreed)
	}
}

// values is what the harness writes to attributes: valid and invalid
// input for every parser of the machine, device names for bind files, and
// "1" for the self-removing ones.
var values = []string{"0", "1", "1\n", "2", "-1", "0x10", "yes", "off", "idle", "busy", "", "add", "change", "stress.0", "1-1", "ahci.0", "hello world", strings.Repeat("x", 70), strings.Repeat("y", kernfs.PageSize+1)}

func (w *worker) sysOp(ctx context.Context, op Op) (bool, error) {
	if len(w.sys) == 0 {
		return false, nil
	}
	i := int(op.A % uint32(len(w.sys)))
	sf := w.sys[i]
	if op.Kind == KSysClose {
		w.closeSys(i)
		return true, nil
	}
	var err error
	var ev sever.Events
	switch op.Kind {
	case KSysRead:
		fctx, cancel := w.deadline(withFault(ctx, op.C))
		_, err = sf.f.ReadAtContext(fctx, w.buf[:256], int64(op.B%2)*int64(op.B%64))
		cancel()
	case KSysWrite:
		fctx, cancel := w.deadline(withFault(ctx, op.C))
		v := values[op.B%uint32(len(values))]
		_, err = sf.f.WriteAtContext(fctx, []byte(v), int64(op.B>>8%32))
		cancel()
	case KSysPoll:
		if op.B%2 == 0 {
			ev, err = sf.f.Poll()
		} else {
			wctx, cancel := context.WithTimeout(ctx, waitFor)
			ev, err = sf.f.Wait(wctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				err = nil
			}
		}
		if ev&sever.EventHup != 0 && !errors.Is(err, sever.ErrNoDevice) {
			w.h.promise(w, "%s on %s: %v with %v; want ENODEV with a hang-up", op, sf.path, ev, err)
		}
	case KSysMmap:
		var mp *sever.Mapping
		if mp, err = sf.f.Mmap(); err == nil {
			if b := mp.Bytes(); len(b) > 0 {
				b[int(op.B)%len(b)]++
			}
			if uerr := mp.Unmap(); uerr != nil {
				w.h.promise(w, "%s on %s: Unmap: %v", op, sf.path, uerr)
			}
		}
	}
	w.shellCheck(op, sf.path, &sf.gone, false, ev, err)
	return true, err
}

// shellCheck holds a file to the shell contract: once the file is known to
// be a shell its provider is gone for good, and every later operation must
// return ENODEV — never succeed, never reach the provider again. A file is
// known to be a shell once Poll, which calls no provider code, reported a
// hang-up; for a stress char device, whose driver never returns ENODEV
// itself, once any operation returned ENODEV. (An attribute's Store may
// return ENODEV of its own — a bind file naming no device — so for other
// files an ENODEV alone proves nothing.)
func (w *worker) shellCheck(op Op, path string, gone *bool, strict bool, ev sever.Events, err error) {
	isGone := err != nil && errors.Is(err, sever.ErrNoDevice)
	if *gone && !isGone {
		w.h.promise(w, "%s on %s, a shell: %v; want ENODEV", op, path, err)
	}
	if isGone && (strict || ev&sever.EventHup != 0) {
		*gone = true
	}
}

// closeSys closes w.sys[i] and checks the closed shell: Close returns nil
// once, and after it every operation returns EBADF.
func (w *worker) closeSys(i int) {
	sf := w.sys[i]
	w.sys = slices.Delete(w.sys, i, i+1) // zeroes the tail: the worker keeps no closed shell
	if err := sf.f.Close(); err != nil {
		w.h.promise(w, "close %s: %v; want nil", sf.path, err)
	}
	if _, err := sf.f.Read(w.buf[:8]); !errors.Is(err, sever.ErrClosed) {
		w.h.promise(w, "read of %s after close: %v; want EBADF", sf.path, err)
	}
	if err := sf.f.Close(); !errors.Is(err, sever.ErrClosed) {
		w.h.promise(w, "second close of %s: %v; want EBADF", sf.path, err)
	}
}

func (w *worker) cdevOpen(op Op) (bool, error) {
	if len(w.cdev) >= maxHandles {
		w.closeCdev(int(op.B) % len(w.cdev))
	}
	reg := w.r.m.Dev()
	name, ok := pick(reg.Names(), op.A)
	if !ok {
		return false, nil
	}
	cf := &cdevFile{name: name}
	flag := os.O_RDWR
	if n, ok := strings.CutPrefix(name, "stress-"); ok {
		i, _ := strconv.Atoi(n)
		if i < len(w.r.slots) {
			cf.stress = w.r.slots[i]
			cf.stress.plan.open.Store(op.C)
		}
		flag = openFlags[op.B%3]
	}
	if op.B&4 != 0 {
		flag |= syscall.O_NONBLOCK
	}
	f, err := reg.Open(name, flag)
	if err != nil {
		return true, err
	}
	cf.f = f
	w.track(f)
	if strings.HasPrefix(name, HostName+"-") {
		w.r.files.Add(1)
	}
	w.cdev = append(w.cdev, cf)
	return true, nil
}

func (w *worker) cdevOp(ctx context.Context, op Op) (bool, error) {
	if len(w.cdev) == 0 {
		return false, nil
	}
	i := int(op.A % uint32(len(w.cdev)))
	cf := w.cdev[i]
	if op.Kind == KCdevClose {
		w.closeCdev(i)
		return true, nil
	}
	var err error
	if cf.stress != nil && op.C&3 != 0 && op.Kind != KCdevIoctl {
		// Plant the fault in the open's next callback: this operation's.
		var arg [4]byte
		binary.LittleEndian.PutUint32(arg[:], op.C)
		if _, err = cf.f.Ioctl(IoctlSetFault, arg[:]); err != nil {
			w.shellCheck(op, "/dev/"+cf.name, &cf.gone, true, 0, err)
			return true, err
		}
	}
	var ev sever.Events
	switch op.Kind {
	case KCdevRead:
		rctx, cancel := context.WithTimeout(ctx, waitFor)
		if cf.stress != nil {
			_, err = cf.f.ReadContext(rctx, w.buf[:16])
		} else if cf.lined {
			_, err = cp2112.ReadLineEvent(rctx, cf.f)
		} else {
			_, err = cf.f.ReadContext(rctx, w.buf[:cp2112.EventSize])
		}
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			err = nil // nothing came: a wait that ended, not a failure
		}
	case KCdevWrite:
		if cf.stress != nil {
			_, err = cf.f.Write(w.buf[:1+op.B%32])
		} else {
			// The gpiochip's text protocol (cp2112.TextProtocol).
			_, err = cf.f.Write([]byte(textCommands[op.B%uint32(len(textCommands))]))
		}
	case KCdevIoctl:
		switch {
		case cf.stress != nil && op.B%3 == 0:
			var arg [8]byte
			_, err = cf.f.Ioctl(IoctlReady, arg[:])
		case cf.stress != nil:
			var arg [4]byte
			binary.LittleEndian.PutUint32(arg[:], op.C)
			_, err = cf.f.Ioctl(IoctlSetFault, arg[:])
		case op.B%3 == 0:
			_, err = cp2112.LineValue(cf.f)
		case op.B%3 == 1:
			_, err = cf.f.Ioctl(cp2112.IoctlRequestLine, []byte{byte(op.B >> 8 % cp2112.Lines), byte(gpio.EdgeBoth)})
			cf.lined = cf.lined || err == nil
		default:
			_, err = cf.f.Ioctl(chardev.IO('B', 0x7f), nil)
		}
	case KCdevPoll:
		if op.B%2 == 0 {
			ev, err = cf.f.Poll()
		} else {
			wctx, cancel := context.WithTimeout(ctx, waitFor)
			ev, err = cf.f.Wait(wctx, sever.EventIn)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				err = nil
			}
		}
		if ev&sever.EventHup != 0 && !errors.Is(err, sever.ErrNoDevice) {
			w.h.promise(w, "%s on /dev/%s: %v with %v; want ENODEV with a hang-up", op, cf.name, ev, err)
		}
	case KCdevMmap:
		var mp *sever.Mapping
		if mp, err = cf.f.Mmap(int(op.B % 2)); err == nil {
			if b := mp.Bytes(); len(b) > 0 {
				b[int(op.B)%len(b)]++
			}
			if uerr := mp.Unmap(); uerr != nil {
				w.h.promise(w, "%s on /dev/%s: Unmap: %v", op, cf.name, uerr)
			}
		}
	}
	w.shellCheck(op, "/dev/"+cf.name, &cf.gone, cf.stress != nil, ev, err)
	return true, err
}

func (w *worker) closeCdev(i int) {
	cf := w.cdev[i]
	w.cdev = slices.Delete(w.cdev, i, i+1)
	if err := cf.f.Close(); err != nil {
		w.h.promise(w, "close /dev/%s: %v; want nil", cf.name, err)
	}
	if _, err := cf.f.Poll(); !errors.Is(err, sever.ErrClosed) {
		w.h.promise(w, "poll of /dev/%s after close: %v; want EBADF", cf.name, err)
	}
	if err := cf.f.Close(); !errors.Is(err, sever.ErrClosed) {
		w.h.promise(w, "second close of /dev/%s: %v; want EBADF", cf.name, err)
	}
}

// selfRemove writes 1 to an attribute whose Store removes its own device
// or disk: a stress device's remove or remove_async, a stress disk's reset,
// a SCSI disk's delete.
func (w *worker) selfRemove(ctx context.Context, op Op) (bool, error) {
	var path string
	switch op.B % 4 {
	case 0, 1:
		s, _ := pick(w.r.slots, op.A)
		path = fmt.Sprintf("/devices/stress.%d/remove", s.i)
		if op.B%4 == 1 {
			path += "_async"
		}
	case 2:
		path = fmt.Sprintf("/block/sst%d/reset", op.A%uint32(len(w.r.slots)))
	default:
		path = fmt.Sprintf("/block/sd%c/device/delete", 'a'+op.A%4)
	}
	f, err := w.r.m.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return true, err
	}
	w.track(f)
	// Only a sleep is planted here: an error or a panic would stop the
	// removal this operation is about.
	var code uint32
	if Fault(op.C&3) == FaultSleep {
		code = op.C
	}
	fctx, cancel := w.deadline(withFault(ctx, code))
	_, err = f.WriteAtContext(fctx, []byte("1"), 0)
	cancel()
	if cerr := f.Close(); cerr != nil {
		w.h.promise(w, "close %s: %v; want nil", path, cerr)
	}
	return true, err
}

// disks lists the disks under /block now.
func (w *worker) disks() []*block.Disk {
	t := w.r.m.Sysfs()
	n, err := t.Lookup("/block")
	if err != nil {
		return nil
	}
	ents, err := t.Readdir(n)
	if err != nil {
		return nil
	}
	ds := make([]*block.Disk, 0, len(ents))
	for _, e := range ents {
		if d := w.r.disk(e.Name); d != nil {
			ds = append(ds, d)
		}
	}
	return ds
}

func (w *worker) blockOp(ctx context.Context, op Op) (bool, error) {
	d, ok := pick(w.disks(), op.A)
	if !ok {
		return false, nil
	}
	switch op.Kind {
	case KBlockIO:
		rq := &blockq.Request{Op: blockq.OpRead, Sector: int64(op.B % 40), Data: w.buf[:block.SectorSize]}
		if op.B&0x100 != 0 {
			rq.Op = blockq.OpWrite
		}
		// The first byte is the fault for the stress disk's driver.
		w.buf[0] = byte(op.C&3) | byte(min(op.C>>2&0x3ff/8, 63))<<2
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return true, d.Submit(ctx, rq)
	case KBlockFreeze:
		fctx, cancel := w.deadline(ctx)
		defer cancel()
		if err := d.Freeze(fctx); err != nil {
			return true, err
		}
		// A submitter on a frozen queue waits; one whose context ends
		// first gets the context's error, and its request never runs.
		if op.B%2 == 0 {
			sctx, scancel := context.WithTimeout(ctx, waitFor)
			err := d.Submit(sctx, &blockq.Request{Op: blockq.OpRead, Data: make([]byte, block.SectorSize)})
			scancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, sever.ErrNoDevice) {
				w.h.promise(w, "%s: submit to a frozen queue: %v; want the context's error or ENODEV", op, err)
			}
		}
		d.Unfreeze()
		return true, nil
	default:
		ctx, cancel := w.deadline(ctx)
		defer cancel()
		return true, d.Del(ctx)
	}
}

// board returns the board in the occupied port a picks, if any.
func (w *worker) board(a uint32) *cp2112.Hardware {
	p, ok := pick(w.r.boardPorts(), a)
	if !ok {
		return nil
	}
	return p.hw.Load()
}

func (w *worker) irqRequest(op Op) (bool, error) {
	hw := w.board(op.A)
	if hw == nil {
		return false, nil
	}
	if len(w.irqs) >= maxHandles {
		return false, nil
	}
	rq := &irqReq{next: new(atomic.Uint32)}
	rq.next.Store(op.C)
	next, faults := rq.next, &w.r.faults
	irq, err := cp2112.RequestIRQ(w.r.m.Core(), hw.Serial(), int(op.B%cp2112.Lines), fmt.Sprintf("stress-w%d", w.id), func(int) {
		_ = faults.inject(next.Swap(0), "irq handler") // a handler returns nothing
	})
	if err != nil {
		return true, err
	}
	rq.irq = irq
	w.irqs = append(w.irqs, rq)
	return true, nil
}

func (w *worker) irqFree(ctx context.Context, op Op) (bool, error) {
	if len(w.irqs) == 0 {
		return false, nil
	}
	i := int(op.A % uint32(len(w.irqs)))
	w.freeIRQ(ctx, i)
	return true, nil
}

// freeIRQ frees w.irqs[i], which must succeed — on a live request and on a
// shell alike — and then refuse a second time.
func (w *worker) freeIRQ(ctx context.Context, i int) {
	rq := w.irqs[i]
	w.irqs = slices.Delete(w.irqs, i, i+1)
	ctx, cancel := w.deadline(ctx)
	defer cancel()
	if err := rq.irq.Free(ctx); err != nil {
		w.h.promise(w, "free_irq %d: %v; want nil", rq.irq.IRQ(), err)
	}
	if err := rq.irq.Free(ctx); !errors.Is(err, sever.ErrClosed) {
		w.h.promise(w, "second free_irq %d: %v; want EBADF", rq.irq.IRQ(), err)
	}
}

// edge drives a board's input line: an interrupt runs the line's edge
// events, IRQ handlers and char device wake-ups on this goroutine.
func (w *worker) edge(op Op) (bool, error) {
	hw := w.board(op.A)
	if hw == nil {
		return false, nil
	}
	if rq, ok := pick(w.irqs, op.B>>8); ok && op.C&3 != 0 {
		rq.next.Store(op.C)
	}
	hw.SetInput(int(op.B%cp2112.Lines), op.B&0x10 != 0)
	return true, nil
}

func (w *worker) i2c(ctx context.Context, op Op) (bool, error) {
	hw := w.board(op.A)
	if hw == nil {
		return false, nil
	}
	br, err := cp2112.Lookup(w.r.m.Core(), hw.Serial())
	if err != nil {
		return true, err
	}
	ref, err := br.Adapter().Get(fmt.Sprintf("stress-w%d", w.id))
	if err != nil {
		return true, err
	}
	var msgs []i2c.Msg
	if op.B%2 == 0 {
		msgs = []i2c.Msg{{Addr: cp2112.SensorAddr, Read: true, Data: w.buf[:2]}}
	} else {
		msgs = []i2c.Msg{{Addr: cp2112.EEPROMAddr, Data: []byte{byte(op.B >> 8)}}, {Addr: cp2112.EEPROMAddr, Read: true, Data: w.buf[:8]}}
	}
	ctx, cancel := w.deadline(ctx)
	defer cancel()
	_, terr := ref.Transfer(ctx, msgs)
	gone := terr != nil && errors.Is(terr, sever.ErrNoDevice)
	if _, again := ref.Transfer(ctx, msgs); gone && !errors.Is(again, sever.ErrNoDevice) {
		w.h.promise(w, "%s: transfer after ENODEV: %v; want ENODEV", op, again)
	}
	if err := ref.Put(); err != nil {
		w.h.promise(w, "%s: i2c_put_adapter: %v; want nil", op, err)
	}
	return true, terr
}

func (w *worker) gpio(op Op) (bool, error) {
	hw := w.board(op.A)
	if hw == nil {
		return false, nil
	}
	chip, err := gpio.Lookup(w.r.m.Core(), hw.Serial())
	if err != nil {
		return true, err
	}
	line, err := chip.RequestLine(int(op.B%cp2112.Lines), fmt.Sprintf("stress-w%d", w.id))
	if err != nil {
		return true, err
	}
	if op.B&0x100 != 0 {
		err = line.SetValue(op.B&0x200 != 0)
	} else {
		_, err = line.Value()
	}
	if cerr := line.Close(); cerr != nil {
		w.h.promise(w, "%s: gpiod_put: %v; want nil", op, cerr)
	}
	return true, err
}

// hostKill kill -9s the driver host while the other workers use its
// devices, and holds the death to the contract: the host's device is
// removed — through the one removal path, which the checker watches —
// within the deadline. A host that is restarting is waited for first (a
// kill of a process that is not there would test nothing); the kill can
// still miss one that a write to /hosts/cp2112/restart is replacing, and
// then fails with ENODEV.
func (w *worker) hostKill(ctx context.Context, op Op) (bool, error) {
	sup := w.r.drv
	dctx, cancel := w.deadline(ctx)
	defer cancel()
	if _, err := sup.WaitRunning(dctx, 0); err != nil {
		w.h.promise(w, "%s: the driver host did not run again within %v: %v (%+v)", op, w.r.cfg.Deadline, err, sup.Status())
		return true, err
	}
	d := sup.Device(HostName)
	if _, err := sup.Kill(); err != nil {
		return true, err
	}
	w.r.kills.Add(1)
	if d == nil {
		return true, nil // the generation died before its device could be seen
	}
	select {
	case <-d.Removed():
	case <-dctx.Done():
		w.h.promise(w, "%s: the killed host's device %s still there after %v", op, d.Name(), w.r.cfg.Deadline)
	}
	return true, nil
}

// closeAll closes every handle the worker holds: the end of a round, when
// everything must be closed before the machine quiesces.
func (w *worker) closeAll(ctx context.Context) {
	for len(w.sys) > 0 {
		w.closeSys(len(w.sys) - 1)
	}
	for len(w.cdev) > 0 {
		w.closeCdev(len(w.cdev) - 1)
	}
	for len(w.irqs) > 0 {
		w.freeIRQ(ctx, len(w.irqs)-1)
	}
}
