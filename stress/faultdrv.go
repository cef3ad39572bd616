package stress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/block"
)

// PanicMarker begins the value of every panic the fault module injects.
// A check.DriverFault whose detail contains it is expected: the harness
// counts it against the panics it injected instead of reporting it.
const PanicMarker = "stress: injected panic"

// errInjected is what an injected error fault returns.
var errInjected = fmt.Errorf("stress: injected error: %w", sever.ErrIO)

// The fault module's ioctl commands.
var (
	// IoctlSetFault plants a fault (an Op's C word, little-endian) in the
	// open: the next callback of that open — including its Release — gets it.
	IoctlSetFault = chardev.IOW('S', 1, 4)
	// IoctlReady returns the number of reads the device can serve now.
	IoctlReady = chardev.IOR('S', 2, 8)
)

// faults counts what the fault module injected on one machine.
type faults struct {
	sleeps, errors, panics atomic.Int64
}

// inject carries out the fault code (an Op's C word) at site: it sleeps,
// returns errInjected, or panics with a value that begins with
// PanicMarker, counting each.
func (fs *faults) inject(code uint32, site string) error {
	switch Fault(code & 3) {
	case FaultSleep:
		fs.sleeps.Add(1)
		time.Sleep(time.Duration(code>>2&0x3ff) * time.Microsecond)
	case FaultError:
		fs.errors.Add(1)
		return errInjected
	case FaultPanic:
		fs.panics.Add(1)
		panic(PanicMarker + " in " + site)
	}
	return nil
}

type faultKey struct{}

// withFault returns ctx carrying the fault code for the attribute callback
// it reaches (kernfs hands the operation's context to Show, Store, Read and
// Write as Call.Context).
func withFault(ctx context.Context, code uint32) context.Context {
	if code&3 == 0 {
		return ctx
	}
	return context.WithValue(ctx, faultKey{}, code)
}

func faultOf(ctx context.Context) uint32 {
	c, _ := ctx.Value(faultKey{}).(uint32)
	return c
}

// plan is a stress platform device's Config.Data: the faults the harness
// plants in the next Probe, Remove and Open of that device. Each is
// consumed (swapped to zero) by the callback it reaches.
type plan struct {
	slot   int
	probe  atomic.Uint32
	remove atomic.Uint32
	open   atomic.Uint32
}

// faultModule is the module "stressdrv": a platform driver whose every
// callback can sleep, fail or panic by the harness's choice, and checks
// the contract from the driver's side — no callback after Remove, no use
// of driver data or per-open state after it was freed, every per-open
// Release exactly once (a check.State and a check.Pending each).
//
// A bound stress.N device has attributes value, mode, label, remove (which
// unregisters the device from its own Store) and remove_async (which does
// it from a callback scheduled with kernfs's ScheduleCallback); a binary
// attribute buffer with a mappable region; a char device dev/stress-N with
// a region and the fault ioctl; and a disk sstN whose queue's driver faults
// by the first byte of each request and whose reset attribute deletes the
// disk from its own Store (zram's reset).
type faultModule struct {
	m     *sim.Machine
	owner *sever.Owner
	drv   *device.Driver
	rig   *rig
}

// devState is a bound stress device's driver data.
type devState struct {
	fm      *faultModule
	d       *device.Device
	st      *check.State[int] // freed by the binding's devres, after Remove
	removed atomic.Bool       // Remove has run
	value   atomic.Int64
	ready   atomic.Int64 // reads the char device can serve
	mu      sync.Mutex
	disk    [16 * block.SectorSize]byte
	buf     [256]byte
}

// check records a callback that runs after Remove or after the driver data
// was freed.
func (ds *devState) check(site string) {
	if ds.removed.Load() {
		ds.fm.m.Log().Record(check.Violation{Class: check.CallbackAfterSever, Object: ds.d.Path(), Detail: "stressdrv " + site + " after Remove"})
	}
	ds.st.Use("stressdrv " + site)
}

// stateOf returns the driver data of d, which every callback of the
// driver may count on: callbacks run only while the driver is bound. One
// that finds none is recorded as a callback after sever (then it panics,
// as a driver dereferencing its gone data would).
func stateOf(d *device.Device) *devState {
	ds, ok := d.DriverData().(*devState)
	if !ok {
		sim.Of(d.Core()).Log().Record(check.Violation{Class: check.CallbackAfterSever, Object: d.Path(),
			Detail: "stressdrv callback with no driver data: the driver is not bound (after Remove, or before Probe)"})
		panic("stressdrv: no driver data")
	}
	return ds
}

// call is the body every callback begins with: it checks the device,
// carries out the planted fault, and checks again — a removal that does not
// wait for the callbacks in flight (a drain skipped) is caught after a
// sleep.
func (ds *devState) call(code uint32, site string) error {
	ds.check(site)
	err := ds.fm.rig.faults.inject(code, site)
	ds.check(site)
	return err
}

func newFaultModule(r *rig, owner *sever.Owner) *faultModule {
	fm := &faultModule{m: r.m, owner: owner, rig: r}
	show := func(site string, f func(ds *devState, buf []byte) []byte) func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
		return func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
			ds := stateOf(d)
			if err := ds.call(faultOf(c.Context()), site); err != nil {
				return nil, err
			}
			return f(ds, buf), nil
		}
	}
	store := func(site string, f func(ds *devState, v any)) func(c *kernfs.Call, d *device.Device, v any) error {
		return func(c *kernfs.Call, d *device.Device, v any) error {
			ds := stateOf(d)
			if err := ds.call(faultOf(c.Context()), site); err != nil {
				return err
			}
			f(ds, v)
			return nil
		}
	}
	var mode atomic.Value
	mode.Store("idle")
	fm.drv = &device.Driver{
		Name:   "stressdrv",
		Owner:  owner,
		IDs:    []string{"stress"},
		Probe:  fm.probe,
		Remove: fm.remove,
		Groups: []device.AttrGroup{{Attrs: []device.Attr{
			{Name: "value", Parse: kernfs.Int(0, 1<<30),
				Show:  show("value show", func(ds *devState, b []byte) []byte { return fmt.Appendf(b, "%d\n", ds.value.Load()) }),
				Store: store("value store", func(ds *devState, v any) { ds.value.Store(v.(int64)) })},
			{Name: "mode", Parse: kernfs.Enum("idle", "busy", "off"),
				Show:  show("mode show", func(ds *devState, b []byte) []byte { return fmt.Appendf(b, "%s\n", mode.Load()) }),
				Store: store("mode store", func(ds *devState, v any) { mode.Store(v) })},
			{Name: "label", Parse: kernfs.String(64),
				Show:  show("label show", func(ds *devState, b []byte) []byte { return append(append(b, ds.d.Name()...), '\n') }),
				Store: store("label store", func(ds *devState, v any) {})},
			{Name: "remove", Parse: kernfs.Int(0, 1), Store: fm.storeRemove},
			{Name: "remove_async", Parse: kernfs.Int(0, 1), Store: fm.storeRemoveAsync},
		}}},
	}
	return fm
}

// probe binds a stress device in steps; the plan's probe fault lands at
// the step it names, so a probe fails (or panics) half-way and the driver
// core must undo exactly what the steps before it added.
func (fm *faultModule) probe(ctx context.Context, d *device.Device) error {
	p := d.Data().(*plan)
	code := p.probe.Swap(0)
	r := fm.rig
	step := func(n uint32) error {
		if code&3 != 0 && code>>12&7 == n {
			return r.faults.inject(code, fmt.Sprintf("probe step %d", n))
		}
		return nil
	}
	if err := step(0); err != nil {
		return err
	}
	ds := &devState{fm: fm, d: d}
	ds.st = check.NewState(fm.m.Log(), d.Path()+" stressdrv driver data", 0)
	if _, err := d.AddResource("driver data", ds.st.Free); err != nil {
		return err
	}
	d.SetDriverData(ds)
	if err := step(1); err != nil {
		return err
	}
	// A binary attribute whose region user space may map. The framework
	// frees a region's memory; the harness counts the frees at the end of
	// the round.
	reg, err := sever.NewRegion(d.Path()+"/buffer region", make([]byte, 4096), fm.m.Options()...)
	if err != nil {
		return err
	}
	r.regions.Store(reg, struct{}{})
	if _, err := d.AddResource("buffer region", reg.Sever); err != nil {
		reg.Sever()
		return err
	}
	t := fm.m.Sysfs()
	node, err := t.AddBin(d.Dir(), kernfs.BinAttr{
		Name: "buffer", Mode: 0o644, Owner: fm.owner, Size: int64(len(ds.buf)), Region: reg,
		Read: func(c *kernfs.Call, off int64, b []byte) (int, error) {
			if err := ds.call(faultOf(c.Context()), "buffer read"); err != nil {
				return 0, err
			}
			ds.mu.Lock()
			defer ds.mu.Unlock()
			return copy(b, ds.buf[off:]), nil
		},
		Write: func(c *kernfs.Call, off int64, data []byte) (int, error) {
			if err := ds.call(faultOf(c.Context()), "buffer write"); err != nil {
				return 0, err
			}
			ds.mu.Lock()
			defer ds.mu.Unlock()
			return copy(ds.buf[off:], data), nil
		},
	})
	if err != nil {
		return err
	}
	if _, err := d.AddSeverable("buffer", device.StageFiles, func(ctx context.Context) error { return t.Remove(ctx, node) }); err != nil {
		return errors.Join(err, t.Remove(ctx, node))
	}
	if err := step(2); err != nil {
		return err
	}
	creg, err := sever.NewRegion(d.Path()+" cdev region", make([]byte, 4096), fm.m.Options()...)
	if err != nil {
		return err
	}
	r.regions.Store(creg, struct{}{})
	if _, err := chardev.Register(d, chardev.Config{
		Name:    fmt.Sprintf("stress-%d", p.slot),
		Owner:   fm.owner,
		Regions: []*sever.Region{creg},
		Ops: chardev.Ops{
			Open:    func(c *chardev.Call) (any, error) { return fm.cdevOpen(ds, p, c) },
			Read:    fm.cdevRead,
			Write:   fm.cdevWrite,
			Ioctl:   fm.cdevIoctl,
			Poll:    fm.cdevPoll,
			Mmap:    fm.cdevMmap,
			Release: fm.cdevRelease,
		},
	}); err != nil {
		creg.Sever() // Register failed: the region is still ours
		return err
	}
	if err := step(3); err != nil {
		return err
	}
	disk, err := block.AddDisk(ctx, d, block.DiskConfig{
		Name: fmt.Sprintf("sst%d", p.slot), Sectors: int64(len(ds.disk) / block.SectorSize), Depth: 2, Owner: fm.owner,
		Driver: blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error { return fm.queueRq(ds, rq) }),
		Attrs: []block.Attr{{Name: "reset", Parse: kernfs.Int(0, 1), Store: func(c *kernfs.Call, disk *block.Disk, v any) error {
			ds.check("disk reset")
			if v.(int64) != 1 {
				return nil
			}
			return disk.DelSelf(c.Context(), c)
		}}},
	})
	if err != nil {
		return err
	}
	r.disks.Store(disk.Name(), disk)
	if err := step(4); err != nil {
		return err
	}
	r.probes.Add(1)
	return nil
}

// remove is the driver's Remove: everything a consumer reaches the device
// through is severed by now.
func (fm *faultModule) remove(ctx context.Context, d *device.Device) {
	ds := stateOf(d)
	ds.check("remove")
	ds.removed.Store(true)
	// Remove returns nothing: an injected error has nowhere to go (a
	// sleep or a panic still happens).
	_ = fm.rig.faults.inject(d.Data().(*plan).remove.Swap(0), "remove")
}

func (fm *faultModule) storeRemove(c *kernfs.Call, d *device.Device, v any) error {
	stateOf(d).check("remove store")
	if v.(int64) != 1 {
		return nil
	}
	// From here the driver data may be freed under us: touch nothing.
	return d.UnregisterSelf(c.Context(), c)
}

func (fm *faultModule) storeRemoveAsync(c *kernfs.Call, d *device.Device, v any) error {
	stateOf(d).check("remove_async store")
	if v.(int64) != 1 {
		return nil
	}
	deadline := fm.rig.cfg.Deadline
	// Seed 004's msleep(100) in the work, shortened: the window in which
	// an unload of the module would overtake the work if nothing pinned it.
	sleep := time.Millisecond + time.Duration(faultOf(c.Context())>>2&0x3ff)*time.Microsecond
	// Seed 004, Example 1: the work must keep the module's code alive
	// until it has run; ScheduleCallback pins the attribute's owner.
	return c.ScheduleCallback(func() {
		time.Sleep(sleep)
		fm.owner.Call("stressdrv remove work", func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			// ENODEV when another path removed the device first; a
			// removal past its deadline is recorded by the checker.
			_ = d.Unregister(ctx)
		})
	})
}

// openState is one open of a stress char device.
type openState struct {
	st   *check.State[int] // freed by Release: a later callback of this open is a use after free
	pend *check.Pending    // Release must run exactly once
	next atomic.Uint32     // the fault planted for the open's next callback
}

func (fm *faultModule) cdevOpen(ds *devState, p *plan, c *chardev.Call) (any, error) {
	ds.check("cdev open")
	if err := fm.rig.faults.inject(p.open.Swap(0), "cdev open"); err != nil {
		return nil, err
	}
	name := c.Cdev().Path() + " open state"
	return &openState{st: check.NewState(fm.m.Log(), name, 0), pend: fm.m.Log().Expect(name, "stressdrv Release")}, nil
}

// enter checks the device and the open and takes the open's planted fault.
func (fm *faultModule) enter(c *chardev.Call, site string) (*devState, uint32) {
	ds := stateOf(c.Cdev().Device())
	ds.check(site)
	o := c.Private().(*openState)
	o.st.Use("stressdrv " + site)
	return ds, o.next.Swap(0)
}

func (fm *faultModule) cdevRead(c *chardev.Call, buf []byte) (int, error) {
	ds, code := fm.enter(c, "cdev read")
	if err := ds.call(code, "cdev read"); err != nil {
		return 0, err
	}
	for {
		n := ds.ready.Load()
		if n <= 0 {
			return 0, sever.ErrWouldBlock
		}
		if ds.ready.CompareAndSwap(n, n-1) {
			break
		}
	}
	return copy(buf, "stress\n"), nil
}

func (fm *faultModule) cdevWrite(c *chardev.Call, data []byte) (int, error) {
	ds, code := fm.enter(c, "cdev write")
	if err := ds.call(code, "cdev write"); err != nil {
		return 0, err
	}
	ds.ready.Add(1)
	c.Cdev().Notify(sever.EventIn)
	return len(data), nil
}

func (fm *faultModule) cdevIoctl(c *chardev.Call, cmd chardev.Cmd, arg []byte) (int, error) {
	if cmd == IoctlSetFault {
		ds := stateOf(c.Cdev().Device())
		ds.check("cdev ioctl")
		o := c.Private().(*openState)
		o.st.Use("stressdrv cdev ioctl")
		o.next.Store(binary.LittleEndian.Uint32(arg))
		return 0, nil
	}
	ds, code := fm.enter(c, "cdev ioctl")
	if err := ds.call(code, "cdev ioctl"); err != nil {
		return 0, err
	}
	if cmd == IoctlReady {
		binary.LittleEndian.PutUint64(arg, uint64(max(ds.ready.Load(), 0)))
		return 0, nil
	}
	return 0, sever.ErrNotTTY
}

func (fm *faultModule) cdevPoll(c *chardev.Call) sever.Events {
	ds, code := fm.enter(c, "cdev poll")
	_ = ds.call(code, "cdev poll") // Poll reports events, not errors

	if ds.ready.Load() > 0 {
		return sever.EventIn | sever.EventOut
	}
	return sever.EventOut
}

func (fm *faultModule) cdevMmap(c *chardev.Call, index int) error {
	ds, code := fm.enter(c, "cdev mmap")
	return ds.call(code, "cdev mmap")
}

// cdevRelease ends an open. The bookkeeping comes first, so an injected
// panic after it still counts the release as run (the framework does).
func (fm *faultModule) cdevRelease(c *chardev.Call) {
	ds := stateOf(c.Cdev().Device())
	ds.check("cdev release")
	o := c.Private().(*openState)
	o.st.Free()
	o.pend.Done()
	fm.rig.releases.Add(1)
	_ = fm.rig.faults.inject(o.next.Swap(0), "cdev release") // Release returns nothing
}

// queueRq is the disk's driver. The first byte of a request's data is the
// fault the harness planted: kind in the low two bits, a sleep of 8µs
// units in the rest.
func (fm *faultModule) queueRq(ds *devState, rq *blockq.Request) error {
	var code uint32
	if len(rq.Data) > 0 {
		b := uint32(rq.Data[0])
		code = b&3 | ((b>>2)*8)<<2
	}
	if err := ds.call(code, "queue_rq"); err != nil {
		return err
	}
	off := rq.Sector * block.SectorSize
	ds.mu.Lock()
	defer ds.mu.Unlock()
	switch rq.Op {
	case blockq.OpRead:
		copy(rq.Data, ds.disk[off:])
	case blockq.OpWrite:
		copy(ds.disk[off:], rq.Data)
	}
	return nil
}
