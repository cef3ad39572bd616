package stress

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/sim/scsi"
	"github.com/sever-dev/sever/subsys/block"
	"github.com/sever-dev/sever/subsys/usb"
)

// rig is one round's machine and what the harness knows about it: the USB
// ports and the boards in them, the stress device slots, the SCSI stack,
// the reloadable modules, and the counters the audits compare.
type rig struct {
	cfg   Config
	round int
	m     *sim.Machine

	faults      faults
	regions     sync.Map     // *sever.Region → struct{}: every region handed over
	releases    atomic.Int64 // stress char device Releases run
	probes      atomic.Int64 // stress probes that completed
	expected    atomic.Int64 // DriverFaults carrying PanicMarker
	shellsOpen  atomic.Int64 // file shells opened (kernfs and chardev)
	shellsFreed atomic.Int64 // of those, collected after their last reference

	host   *usb.Host
	ports  []*port
	slots  []*slot
	ml     *scsi.Midlayer
	sd     atomic.Pointer[scsi.SD]
	lib    atomic.Pointer[scsi.Libata]
	ctrls  []*device.Device
	boards atomic.Int64
	disks  sync.Map // stress disk name → *block.Disk (the latest of that name)
	mods   []*module
	fm     atomic.Pointer[faultModule]

	drv   *drvhost.Supervisor // the driver host (Config.Host), or nil
	kills atomic.Int64        // host-kills that killed a host process
	files atomic.Int64        // opens of the host's attributes and char device

	onViolation func(check.Violation)
}

// port is a USB port and the board the harness plugged into it.
type port struct {
	p  *usb.Port
	mu sync.Mutex // serializes the harness's plug and unplug of this port
	hw atomic.Pointer[cp2112.Hardware]
}

// slot is a place for a stress platform device, stress.<i>.
type slot struct {
	i    int
	mu   sync.Mutex // serializes the harness's add and delete of this slot
	d    atomic.Pointer[device.Device]
	plan *plan
}

// module is a module the harness unloads and reloads.
type module struct {
	name string
	deps []string
	// load registers the module's drivers once it is inserted as owner.
	load func(ctx context.Context, owner *sever.Owner) error
}

// newRig builds round's machine: the modules loaded and their drivers
// registered, a USB host with cfg.Ports ports (the first half plugged with
// cp2112 boards), cfg.Slots stress devices, and cfg.Controllers AHCI
// controllers with a disk each.
func newRig(ctx context.Context, cfg Config, round int, onViolation func(check.Violation)) (*rig, error) {
	r := &rig{cfg: cfg, round: round, m: sim.New(fmt.Sprintf("stress-%d-r%d", cfg.Seed, round), cfg.Machine...), onViolation: onViolation}
	m := r.m
	m.Log().Observe(r.observe)
	for _, name := range []string{"at24", "lm75", "scsi_mod"} {
		if _, err := m.Insmod(name, nil); err != nil {
			return nil, err
		}
	}
	if err := cp2112.RegisterClientDrivers(ctx, m, m.Module("at24"), m.Module("lm75")); err != nil {
		return nil, err
	}
	ml, err := scsi.NewMidlayer(m, m.Module("scsi_mod"), 0)
	if err != nil {
		return nil, err
	}
	r.ml = ml
	r.mods = []*module{
		{name: "cp2112", load: func(ctx context.Context, o *sever.Owner) error {
			_, err := cp2112.Register(ctx, m, o, 0)
			return err
		}},
		{name: "stressdrv", load: func(ctx context.Context, o *sever.Owner) error {
			fm := newFaultModule(r, o)
			r.fm.Store(fm)
			return m.Platform().RegisterDriver(ctx, fm.drv)
		}},
		{name: "sd_mod", deps: []string{"scsi_mod"}, load: func(ctx context.Context, o *sever.Owner) error {
			sd, err := scsi.RegisterSD(ctx, m, o, ml)
			r.sd.Store(sd)
			return err
		}},
		{name: "libata", deps: []string{"scsi_mod"}, load: func(ctx context.Context, o *sever.Owner) error {
			r.lib.Store(scsi.NewLibata(m, o, ml))
			return nil
		}},
		{name: "ahci", deps: []string{"libata"}, load: func(ctx context.Context, o *sever.Owner) error {
			return scsi.RegisterAHCI(ctx, m, o, r.lib.Load())
		}},
	}
	for _, md := range r.mods {
		if err := r.insmod(ctx, md); err != nil {
			return nil, err
		}
	}
	if r.host, err = usb.NewHost(ctx, m.Core(), "usb1", cfg.Ports); err != nil {
		return nil, err
	}
	for i := range cfg.Ports {
		p := &port{p: r.host.Port(i + 1)}
		r.ports = append(r.ports, p)
		if i < (cfg.Ports+1)/2 {
			if err := r.plug(ctx, p); err != nil {
				return nil, err
			}
		}
	}
	for i := range cfg.Slots {
		s := &slot{i: i, plan: &plan{slot: i}}
		r.slots = append(r.slots, s)
		if _, err := r.addDevice(ctx, s); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Controllers {
		d, err := scsi.AddController(ctx, m, fmt.Sprintf("ahci.%d", i), scsi.NewDiskHardware(32))
		if err != nil {
			return nil, err
		}
		r.ctrls = append(r.ctrls, d)
	}
	if len(cfg.Host) > 0 {
		if err := r.startHost(ctx); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// HostName is the stress machine's driver host: its controls are
// /hosts/cp2112/, its devices under /devices/host-cp2112/, its char
// device dev/cp2112-gpiochip0. The host process (Config.Host) serves the
// cp2112 host of sim/pc (pc.ServeHost with pc.CP2112Host).
const HostName = "cp2112"

// startHost starts the driver host Config.Host describes, restarted at
// once (1-8ms) after every death, and makes the machine's quiesce stop
// it.
func (r *rig) startHost(ctx context.Context) error {
	sup, err := drvhost.New(r.m.Core(), drvhost.Config{
		Name: HostName, Command: r.cfg.Host, Env: r.cfg.HostEnv,
		Policy: drvhost.RestartAlways, Backoff: time.Millisecond, MaxBackoff: 8 * time.Millisecond,
		CdevPrefix: HostName + "-",
	})
	if err != nil {
		return err
	}
	if err := sup.Start(ctx); err != nil {
		// A supervisor's life ends with Stop, a failed start's too; the
		// start's error is the one that says what went wrong.
		_ = sup.Stop(ctx)
		return fmt.Errorf("driver host %s: %w", HostName, err)
	}
	r.drv = sup
	r.m.OnQuiesce("driver host "+HostName, sup.Stop)
	return nil
}

// observe is the machine log's observer: a check.DriverFault from a panic
// the fault module injected is counted as expected; every other violation
// goes to the harness.
func (r *rig) observe(v check.Violation) {
	if v.Class == check.DriverFault && strings.Contains(v.Detail, PanicMarker) {
		r.expected.Add(1)
		return
	}
	r.onViolation(v)
}

// insmod inserts md and registers its drivers. A module still loaded (or
// unloading) is refused with an error wrapping sever.ErrExist; one whose
// dependency is gone with sever.ErrNotExist.
func (r *rig) insmod(ctx context.Context, md *module) error {
	o, err := r.m.Insmod(md.name, nil, md.deps...)
	if err != nil {
		return err
	}
	return md.load(ctx, o)
}

// plug plugs a fresh board into p. The board's serial is unique on the
// machine, as cp2112.NewHardware requires.
func (r *rig) plug(ctx context.Context, p *port) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	hw := cp2112.NewHardware(fmt.Sprintf("b%d", r.boards.Add(1)))
	if _, err := cp2112.Plug(ctx, r.m, p.p, hw); err != nil {
		return err
	}
	p.hw.Store(hw)
	return nil
}

// unplug unplugs p's board, if any.
func (r *rig) unplug(ctx context.Context, p *port) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hw.Store(nil)
	return p.p.Unplug(ctx)
}

// addDevice registers slot s's stress device, unless one is there. ok is
// false when the slot was occupied.
func (r *rig) addDevice(ctx context.Context, s *slot) (ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.d.Load(); d != nil && !removed(d) {
		return false, nil
	}
	d, err := r.m.Core().Register(ctx, device.Config{Name: fmt.Sprintf("stress.%d", s.i), Bus: r.m.Platform(), Compatible: "stress", Data: s.plan})
	if err != nil {
		return true, err
	}
	s.d.Store(d)
	return true, nil
}

// delDevice unregisters slot s's stress device, if any.
func (r *rig) delDevice(ctx context.Context, s *slot) (ok bool, err error) {
	s.mu.Lock()
	d := s.d.Swap(nil)
	s.mu.Unlock()
	if d == nil {
		return false, nil
	}
	return true, d.Unregister(ctx)
}

func removed(d *device.Device) bool {
	select {
	case <-d.Removed():
		return true
	default:
		return false
	}
}

// devices lists the devices the harness binds and unbinds: the boards in
// the ports, the stress devices and the AHCI controllers.
func (r *rig) devices() []*device.Device {
	ds := make([]*device.Device, 0, len(r.ports)+len(r.slots)+len(r.ctrls))
	for _, p := range r.ports {
		if u := p.p.Device(); u != nil {
			ds = append(ds, u.Device())
		}
	}
	for _, s := range r.slots {
		if d := s.d.Load(); d != nil {
			ds = append(ds, d)
		}
	}
	return append(ds, r.ctrls...)
}

// boardPorts lists the ports the harness has plugged a board into and
// not unplugged since.
func (r *rig) boardPorts() []*port {
	ps := make([]*port, 0, len(r.ports))
	for _, p := range r.ports {
		if p.hw.Load() != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// unloaded lists the reloadable modules that are not loaded now.
func (r *rig) unloaded() []*module {
	var ms []*module
	for _, md := range r.mods {
		if r.m.Module(md.name) == nil {
			ms = append(ms, md)
		}
	}
	return ms
}

// bindable lists the devices with no driver bound for which a driver is
// registered: what a bind can probe.
func (r *rig) bindable() []*device.Device {
	var ds []*device.Device
	for _, d := range r.devices() {
		if d.Driver() == nil && !removed(d) && driverFor(d) != nil {
			ds = append(ds, d)
		}
	}
	return ds
}

// slotsWith lists the slots that hold a device (occupied) or do not.
func (r *rig) slotsWith(occupied bool) []*slot {
	ss := make([]*slot, 0, len(r.slots))
	for _, s := range r.slots {
		d := s.d.Load()
		if (d != nil && !removed(d)) == occupied {
			ss = append(ss, s)
		}
	}
	return ss
}

// driverFor returns a driver registered on d's bus that lists d's
// compatible string, or nil.
func driverFor(d *device.Device) *device.Driver {
	b := d.Bus()
	if b == nil {
		return nil
	}
	for _, drv := range b.Drivers() {
		if slices.Contains(drv.IDs, d.Compatible()) {
			return drv
		}
	}
	return nil
}

// slotOf returns the slot whose device is d, or nil.
func (r *rig) slotOf(d *device.Device) *slot {
	for _, s := range r.slots {
		if s.d.Load() == d {
			return s
		}
	}
	return nil
}

// disk returns the disk named name: a stress disk, or one of sd_mod's.
func (r *rig) disk(name string) *block.Disk {
	if v, ok := r.disks.Load(name); ok {
		return v.(*block.Disk)
	}
	if sd := r.sd.Load(); sd != nil {
		return sd.Disk(name)
	}
	return nil
}
