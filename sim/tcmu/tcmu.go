// Package tcmu is the setting of seed 003 (DESIGN.md, "Seed 003"):
// target_core_user (tcmu), a SCSI
// target backstore whose commands are carried out by a user-space daemon,
// tcmu-runner, through a uio device — /dev/uioN, whose region 0 is tcmu's
// data area (the command ring and its pages), mapped into the daemon.
//
// Two modules, two owners: "uio", the subsystem (package subsys/uio), and
// "target_core_user", the driver, which depends on uio. The driver binds
// the devices a configfs mkdir creates on the "tcm_user" bus; each binding
// allocates a data area and registers a uio device exposing it.
//
// When the device goes — configfs rmdir, rmmod of the driver, the machine's
// shutdown — the driver unregisters its uio device while tcmu-runner still
// has it open and mapped. The daemon's blocked read wakes with EIO, its
// poll with EventErr|EventHup, and it winds down: finishes the command in
// its mapping, unmaps, closes.
//
// Correct, as a driver author writes it against sever: the data area is
// handed to the framework as a sever.Region, and the driver frees nothing,
// ever. The mapping keeps the pages valid through the unregistration; the
// framework frees them exactly once, when the device is unregistered and
// the last mapping and open are gone, without calling any code of the
// driver — so target_core_user unloads at once, even with the daemon
// still mapping the pages.
//
// Naive (BugFreeAtUnregister): the driver frees the pages itself in
// Remove, at unregister — what tcmu does when uio gives it no
// late_release — while the daemon still maps them. The daemon's next touch
// of its mapping is a check.UseAfterFree.
package tcmu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/uio"
)

// The modules Load inserts.
const (
	UIOModule  = "uio"
	ModuleName = "target_core_user"
)

// DataAreaSize is the size of a device's data area (uio region 0).
const DataAreaSize = 64 << 10

// Bugs selects naive behaviours; zero is the correct driver.
type Bugs uint

// BugFreeAtUnregister makes the driver free its data area pages in
// Remove, when it unregisters its uio device, although tcmu-runner may
// still have them mapped (seed 003): the daemon's next touch of the
// mapping is check.UseAfterFree.
const BugFreeAtUnregister Bugs = 1 << iota

// Target is the loaded driver: modules uio and target_core_user, the
// tcm_user bus and the tcmu driver on it.
type Target struct {
	m     *sim.Machine
	uio   *sever.Owner
	owner *sever.Owner
	bugs  Bugs
	bus   *device.Bus

	mu      sync.Mutex
	devs    map[*device.Device]*Dev
	handles []*device.Handle[*Dev] // target_core_mod's ring handles, closed when the module goes
}

// Load inserts modules uio and target_core_user (which depends on uio) on
// m and registers the tcmu driver on the tcm_user bus. Unload them with
// m.Rmmod, driver first: uio is refused while target_core_user is loaded.
func Load(ctx context.Context, m *sim.Machine, bugs Bugs) (*Target, error) {
	uo, err := m.Insmod(UIOModule, nil)
	if err != nil {
		return nil, err
	}
	owner, err := m.Insmod(ModuleName, nil, UIOModule)
	if err != nil {
		return nil, err
	}
	bus, err := m.Core().NewBus(device.BusConfig{Name: "tcm_user"})
	if err != nil {
		return nil, err
	}
	t := &Target{m: m, uio: uo, owner: owner, bugs: bugs, bus: bus, devs: make(map[*device.Device]*Dev)}
	err = bus.RegisterDriver(ctx, &device.Driver{
		Name: "tcmu", Owner: owner, IDs: []string{"tcm-user"},
		Probe: t.probe, Remove: t.remove,
	})
	if err != nil {
		return nil, err
	}
	m.OnQuiesce("tcmu: close target_core_mod's ring handles", t.closeHandles)
	return t, nil
}

// closeHandles runs at the machine's Quiesce: target_core_mod's handles
// on the command rings are the consumer's to close. They outlive their
// devices and the module (a Queue after unregister returns ENODEV through
// them) but not the machine; one never closed is a leak the checker
// reports.
func (t *Target) closeHandles(context.Context) error {
	t.mu.Lock()
	hs := t.handles
	t.handles = nil
	t.mu.Unlock()
	for _, h := range hs {
		_ = h.Close()
	}
	return nil
}

// Owner returns the driver's module, target_core_user.
func (t *Target) Owner() *sever.Owner { return t.owner }

// UIOOwner returns the uio module.
func (t *Target) UIOOwner() *sever.Owner { return t.uio }

// Dev is one tcmu device: a device on the tcm_user bus, its data area and
// its uio device.
//
//	bound ──Destroy | rmmod | shutdown──▶ unregistered ──last unmap and close──▶ pages freed
//
// Correct, the pages are freed at the last step, by the framework (the
// region); naive, at the first arrow, by the driver.
type Dev struct {
	t      *Target
	dev    *device.Device
	name   string
	pages  *check.State[[]byte] // the data area as the MMU sees it: the naive driver's free makes a touch a use after free
	region *sever.Region        // the data area handed to the framework
	uio    *uio.Device
	cmds   *device.Handle[*Dev] // target_core_mod's handle on the command ring; a shell returning ENODEV after unregister

	queued       atomic.Uint32
	frees        atomic.Int32 // the naive driver's own frees
	freedNoticed atomic.Bool  // the framework's free is on the timeline
	releases     atomic.Int32
}

// Create makes tcmu device name (configfs mkdir and enable): a device on
// the tcm_user bus, which the driver binds — allocating its data area and
// registering its uio device.
func (t *Target) Create(ctx context.Context, name string) (*Dev, error) {
	dev, err := t.m.Core().Register(ctx, device.Config{Name: name, Bus: t.bus, Compatible: "tcm-user"})
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	d := t.devs[dev]
	t.mu.Unlock()
	if d == nil {
		err := &sever.ObjectError{Object: dev.Path(), Err: fmt.Errorf("tcmu did not bind: %w", sever.ErrNoDevice)}
		return nil, errors.Join(err, dev.Unregister(ctx))
	}
	return d, nil
}

// Destroy removes d (configfs rmdir): its device is unregistered, which
// unregisters its uio device under the daemon. It returns when no callback
// of the driver runs for d now or later.
func (t *Target) Destroy(ctx context.Context, d *Dev) error {
	t.m.Record(sim.KindSevered, d.dev.Path(), "configfs rmdir: tcmu unregisters "+d.uio.Name())
	err := d.dev.Unregister(ctx)
	t.m.Record(sim.KindDrained, d.dev.Path(), errText(err, "unregistered: no tcmu or uio callback runs now or later"))
	d.noticeFree()
	return err
}

// probe is tcmu_configure_device.
func (t *Target) probe(ctx context.Context, dev *device.Device) error {
	d := &Dev{t: t, dev: dev, name: dev.Name()}
	mem := make([]byte, DataAreaSize)
	d.pages = check.NewState(t.m.Log(), d.name+": data area pages", mem)
	r, err := sever.NewRegion(d.name+": data area", mem, t.m.Options()...)
	if err != nil {
		return err
	}
	d.region = r
	d.uio, err = uio.Register(ctx, dev, uio.Info{
		Name: "tcm-user", Version: "2.0", Owner: t.owner,
		Regions: []*sever.Region{r},
		Release: func() {
			d.releases.Add(1)
			t.m.Record(sim.KindReleased, "/dev/"+d.uio.Name(), "tcmu_release")
		},
	})
	if err != nil {
		r.Sever()
		return err
	}
	p, err := device.NewProvider(dev, "cmd ring", d)
	if err != nil {
		return err
	}
	if d.cmds, err = p.Open("target_core_mod"); err != nil {
		return err
	}
	t.mu.Lock()
	t.handles = append(t.handles, d.cmds)
	t.devs[dev] = d
	t.mu.Unlock()
	t.m.Record(sim.KindEntered, dev.Path(), "tcmu_configure_device: "+d.uio.Name()+" with a data area of "+fmt.Sprint(DataAreaSize))
	return nil
}

// remove is tcmu's unbind: the uio device is unregistered by now (its
// files severed, its releases run) and the command ring revoked.
func (t *Target) remove(ctx context.Context, dev *device.Device) {
	t.mu.Lock()
	d := t.devs[dev]
	delete(t.devs, dev)
	t.mu.Unlock()
	if d == nil {
		return
	}
	if t.bugs&BugFreeAtUnregister != 0 {
		// The naive free: there is no later callback to free them in, and
		// the daemon may still have them mapped.
		d.frees.Add(1)
		d.pages.Free()
		t.m.Record(sim.KindFreed, d.name+": data area", "freed by tcmu at unregister (naive): the daemon may still map them")
	}
	d.noticeFree()
}

// noticeFree puts the framework's free of the data area on the machine's
// timeline once it has happened. It is called by whoever may have caused
// it or looks — the unregistration, the daemon's close, Frees — never by
// the region: the framework frees the memory without calling anyone.
func (d *Dev) noticeFree() {
	if d.t.bugs&BugFreeAtUnregister == 0 && d.region.Freed() && !d.freedNoticed.Swap(true) {
		d.t.m.Record(sim.KindFreed, d.name+": data area", "freed by the framework: unregistered, last mapping and open gone")
	}
}

// Name returns the device's name.
func (d *Dev) Name() string { return d.name }

// Device returns the device on the tcm_user bus.
func (d *Dev) Device() *device.Device { return d.dev }

// UIO returns the device's uio device.
func (d *Dev) UIO() *uio.Device { return d.uio }

// Frees returns how many times the data area was freed — by the driver
// (naive) or by the framework (correct): 0 while it may be mapped, then
// exactly 1. The first call to see the framework's free puts it on the
// machine's timeline, if nothing did before.
func (d *Dev) Frees() int {
	d.noticeFree()
	n := int(d.frees.Load())
	if d.t.bugs&BugFreeAtUnregister == 0 && d.region.Freed() {
		n++
	}
	return n
}

// Releases returns how many opens of the uio device were released.
func (d *Dev) Releases() int { return int(d.releases.Load()) }

// Queue queues one SCSI command for the daemon (tcmu_queue_cmd): it is
// written to the command ring in the data area and the daemon is
// interrupted. It fails with an error wrapping sever.ErrNoDevice once the
// device is unregistering; it never touches the pages after that.
func (d *Dev) Queue() error {
	return d.cmds.Do(func(d *Dev) error {
		d.pages.Use("tcmu_queue_cmd: write the command ring")
		n := d.queued.Add(1)
		d.uio.Interrupt()
		d.t.m.Record(sim.KindEntered, d.dev.Path(), fmt.Sprintf("tcmu_queue_cmd %d", n))
		return nil
	})
}

// Runner is tcmu-runner's hold on one device: /dev/uioN open and its data
// area mapped. A Runner is used by one goroutine at a time.
type Runner struct {
	d    *Dev
	f    *chardev.File
	m    *sever.Mapping
	done bool
}

// OpenRunner opens d's uio device and maps its data area, as tcmu-runner
// does when the device appears.
func (d *Dev) OpenRunner() (*Runner, error) {
	f, err := d.uio.Open(os.O_RDWR)
	if err != nil {
		return nil, err
	}
	m, err := f.Mmap(0)
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return &Runner{d: d, f: f, m: m}, nil
}

// File returns the open uio device.
func (r *Runner) File() *chardev.File { return r.f }

// Wait blocks until the device interrupts and returns the interrupt count
// (uio's read): an error wrapping sever.ErrIO once the device is
// unregistered, ctx's if it ends first.
func (r *Runner) Wait(ctx context.Context) (uint32, error) {
	buf := make([]byte, 4)
	if _, err := r.f.ReadContext(ctx, buf); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(buf), nil
}

// Touch uses the mapped data area at site: processing a command, or
// finishing the last one. The mapping must still have memory (otherwise
// the daemon takes SIGBUS: an error wrapping sever.ErrIO), and the pages
// behind it must be live — the checker's MMU records a touch of freed
// pages as check.UseAfterFree. It fails with sever.ErrClosed after Close.
func (r *Runner) Touch(site string) error {
	if r.done {
		return sever.ErrClosed
	}
	if r.m.Bytes() == nil {
		return &sever.ObjectError{Object: r.d.name + ": data area", Err: fmt.Errorf("SIGBUS: mapping has no memory: %w", sever.ErrIO)}
	}
	r.d.pages.Use("tcmu-runner: " + site)
	return nil
}

// Close unmaps the data area and closes the uio device, as the daemon does
// when it winds down. A second Close does nothing. Neither can fail on a
// runner's own mapping and file (both are closed once, here); an error
// would be a framework bug, recorded in the machine's trace.
func (r *Runner) Close() {
	if r.done {
		return
	}
	r.done = true
	if err := errors.Join(r.m.Unmap(), r.f.Close()); err != nil {
		r.d.t.m.Record(sim.KindStep, "/dev/"+r.d.uio.Name(), "tcmu-runner close: "+err.Error())
	}
	r.d.noticeFree()
}

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}
