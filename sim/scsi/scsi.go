// Package scsi simulates seed 004's stack (DESIGN.md, "Seed 004"): a SCSI
// host driven by ahci over
// libata, a disk bound by sd_mod, and the SCSI device's "delete" attribute,
// whose code belongs to scsi_mod although it sits under a node that
// libata and ahci implement. Four modules, four owners:
//
//	scsi_mod  the midlayer: the scsi bus, hosts, SCSI devices, "delete",
//	          the SCSI device's release (scsi_device_dev_release)
//	libata    the host template: queuecommand, slave_destroy
//	ahci      the controller driver on the platform bus
//	sd_mod    the upper driver: a block disk (subsys/block) per SCSI device
//
// Correct, the way the seed's RFD asks for: unregistering is immediate.
// Unbinding ahci removes the host, its SCSI devices and their disks
// children-first — the disk's request queue is drained and killed, its
// attribute files are severed (orphaned: open files return ENODEV), the
// SCSI device's release runs in the removal path while libata is still
// there — and nothing references the device after. The delete attribute
// removes its device from a callback scheduled with kernfs's
// ScheduleCallback, which pins the attribute's owner, scsi_mod, until the
// callback has run (Example 1); an open delete file pins scsi_mod, the
// attribute's own owner, and nothing of the device (Example 2).
//
// Naive, the two examples of the seed:
//
//   - BugUnpinnedCallback (Example 1): delete's Store schedules its work
//     the 2007 way, holding a reference to the device but not the module;
//     the work runs scsi_mod code after rmmod scsi_mod: a
//     check.CallIntoGoneOwner.
//   - BugLegacyOpen (Example 2): opening delete grabs what 2007's sysfs
//     grabbed — the SCSI device's kobject and the module of the driver
//     bound to it, sd_mod — and the SCSI device's release runs at the last
//     put of its kobject, calling the host template's slave_destroy. Held
//     open across rmmod ahci and libata, the close runs libata code that
//     is gone: check.CallIntoGoneOwner (and, from the audit of seed 004
//     §3 at unregister, check.ReferenceAfterUnregister for the kobject
//     reference the open still holds).
package scsi

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
)

// Bugs selects naive behaviours of the midlayer; zero is correct.
type Bugs uint

// The naive behaviours, one per example of seed 004.
const (
	// BugUnpinnedCallback: delete's deferred work pins the device, not
	// scsi_mod (Example 1).
	BugUnpinnedCallback Bugs = 1 << iota
	// BugLegacyOpen: opening an attribute pins the device's kobject and
	// the bound driver's module, and the device's release runs at the last
	// kobject put (Example 2). Use OpenAttr to open the way the machine's
	// sysfs does.
	BugLegacyOpen
)

// Midlayer is scsi_mod: the scsi bus and the SCSI devices on it.
type Midlayer struct {
	m     *sim.Machine
	owner *sever.Owner
	bugs  Bugs
	bus   *device.Bus
	// CallbackDelay, if set, runs at the start of delete's deferred work:
	// the msleep(100) the seed inserts "to make the problem reliably
	// reproducible". It must return.
	CallbackDelay func()

	mu    sync.Mutex
	hosts int
	sdevs map[*kernfs.Node]*SDev // by directory, for OpenAttr
}

// NewMidlayer loads the midlayer's code, owner (module "scsi_mod"), on m:
// it registers the scsi bus.
func NewMidlayer(m *sim.Machine, owner *sever.Owner, bugs Bugs) (*Midlayer, error) {
	bus, err := m.Core().NewBus(device.BusConfig{Name: "scsi"})
	if err != nil {
		return nil, err
	}
	return &Midlayer{m: m, owner: owner, bugs: bugs, bus: bus, sdevs: make(map[*kernfs.Node]*SDev)}, nil
}

// Bus returns the scsi bus, where upper drivers (sd_mod) register.
func (ml *Midlayer) Bus() *device.Bus { return ml.bus }

// Command is one SCSI command as the midlayer hands it to a host: a block
// read or write of len(Data) bytes at sector.
type Command struct {
	Write  bool
	Sector int64
	Data   []byte
}

// HostTemplate is a low-level driver's side of a host (scsi_host_template).
// Its functions are Owner's code.
type HostTemplate struct {
	Name  string
	Owner *sever.Owner
	// QueueCommand performs cmd. It is called on the request queue's
	// worker goroutines while the host's SCSI device is live; the device's
	// removal drains the queue first, so it never runs after.
	QueueCommand func(ctx context.Context, cmd *Command) error
	// SlaveDestroy runs once per SCSI device, from the device's release.
	SlaveDestroy func(sdev *SDev)
}

// Host is a registered SCSI host.
type Host struct {
	ml   *Midlayer
	dev  *device.Device
	tmpl HostTemplate
	no   int
}

// SDev is a SCSI device (struct scsi_device) on a host.
type SDev struct {
	host    *Host
	dev     *device.Device
	sectors int64
	state   *check.State[*Host] // the midlayer's per-device data, freed at release
	kobj    *sever.Ref          // naive BugLegacyOpen only: the kobject whose last put releases
}

// Device returns the SCSI device's device.
func (s *SDev) Device() *device.Device { return s.dev }

// Sectors returns the device's capacity in 512-byte sectors.
func (s *SDev) Sectors() int64 { return s.sectors }

// SDevOf returns the SCSI device d represents, or nil.
func SDevOf(d *device.Device) *SDev {
	s, _ := d.Data().(*SDev)
	return s
}

// AddHost registers a host under parent (scsi_add_host) and scans it: one
// SCSI device of sectors, which upper drivers then bind. Called from the
// low-level driver's Probe, the host belongs to that binding and is removed
// — SCSI devices and their disks first — when it ends.
func (ml *Midlayer) AddHost(ctx context.Context, parent *device.Device, tmpl HostTemplate, sectors int64) (*Host, error) {
	if ml.owner.State() != sever.OwnerLive {
		return nil, &sever.ObjectError{Object: "scsi_mod", Err: sever.ErrNoDevice}
	}
	ml.mu.Lock()
	no := ml.hosts
	ml.hosts++
	ml.mu.Unlock()
	h := &Host{ml: ml, tmpl: tmpl, no: no}
	// The host calls its template's code (queuecommand, slave_destroy)
	// until it is removed: it pins the template's owner for that long, and
	// a template whose module is not live cannot make a host (found by
	// sever stress --seed 7: a host made with an unloaded libata's
	// template called into it).
	if o := tmpl.Owner; o != nil && !o.TryGet(h) {
		return nil, &sever.ObjectError{Object: "scsi_mod", Err: fmt.Errorf("host template %s: owner %s is %v: %w", tmpl.Name, o.Name(), o.State(), sever.ErrNoDevice)}
	}
	unpin := func() {
		if o := tmpl.Owner; o != nil {
			o.Put(h)
		}
	}
	var err error
	if h.dev, err = ml.m.Core().Register(ctx, device.Config{Name: fmt.Sprintf("host%d", no), Parent: parent, Owner: ml.owner}); err != nil {
		unpin()
		return nil, err
	}
	// Released when the host is unregistered, after its SCSI devices (its
	// children, whose release calls slave_destroy) are gone.
	if _, err := h.dev.AddResource("host template pin", unpin); err != nil {
		unpin()
		return nil, err
	}
	s := &SDev{host: h, sectors: sectors}
	s.state = check.NewState(ml.m.Log(), fmt.Sprintf("%d:0:0:0 scsi_device", no), h)
	release := s.release
	if ml.bugs&BugLegacyOpen != 0 {
		// The 2007 device model: the release waits for the last kobject put.
		s.kobj = sever.NewRef(fmt.Sprintf("%d:0:0:0 kobject", no), s.release, ml.m.Options()...)
		release = func() {
			s.kobj.Put(nil) // device_del's put; the last one releases
			// Seed 004 §3: "verifying reference count is 0 after
			// unregistering" — the check 2007's code lacked.
			_ = s.kobj.Audit(ml.m.Log(), 0) // a leak is recorded in the log; that is the point
		}
	}
	s.dev, err = ml.m.Core().Register(ctx, device.Config{
		Name:       fmt.Sprintf("%d:0:0:0", no),
		Parent:     h.dev,
		Bus:        ml.bus,
		Compatible: "scsi:type0",
		Data:       s,
		Owner:      ml.owner,
		Groups:     []device.AttrGroup{{Attrs: []device.Attr{{Name: "delete", Store: ml.storeDelete, Parse: kernfs.Int(0, 1)}}}},
		Release:    release,
	})
	if err != nil {
		return nil, err
	}
	ml.mu.Lock()
	ml.sdevs[s.dev.Dir()] = s
	ml.mu.Unlock()
	return h, nil
}

// release is scsi_device_dev_release: scsi_mod code that calls the host
// template's slave_destroy, then frees the device's data. Correct, it runs
// in the removal path, when the host's driver is still there.
func (s *SDev) release() {
	ml := s.host.ml
	ml.owner.Call("scsi_device_dev_release", func() {
		if s.host.tmpl.SlaveDestroy != nil {
			s.host.tmpl.Owner.Call(s.host.tmpl.Name+" slave_destroy", func() { s.host.tmpl.SlaveDestroy(s) })
		}
		ml.mu.Lock()
		delete(ml.sdevs, s.dev.Dir())
		ml.mu.Unlock()
		s.state.Free()
		ml.m.Record(sim.KindFreed, s.dev.Path(), "scsi_device released")
	})
}

// dispatch is scsi_queue_rq: midlayer code that hands a command to the
// host's queuecommand.
func (s *SDev) dispatch(ctx context.Context, cmd *Command) (err error) {
	err = sever.ErrIO
	s.host.ml.owner.Call("scsi_queue_rq", func() {
		h, ok := s.state.Use("scsi_queue_rq")
		if !ok {
			return
		}
		h.tmpl.Owner.Call(h.tmpl.Name+" queuecommand", func() { err = h.tmpl.QueueCommand(ctx, cmd) })
	})
	return err
}

// storeDelete is the delete attribute: it removes the SCSI device from
// deferred work, since a Store cannot unregister the device it runs in.
func (ml *Midlayer) storeDelete(c *kernfs.Call, d *device.Device, v any) error {
	if v.(int64) != 1 {
		return nil
	}
	ml.m.Record(sim.KindEntered, c.Path(), "sdev_store_delete: scheduling scsi_remove_device")
	work := func() {
		if ml.CallbackDelay != nil {
			ml.CallbackDelay()
		}
		ml.m.Record(sim.KindEntered, d.Path(), "deferred scsi_remove_device")
		ml.unregisterDeferred(d)
	}
	if ml.bugs&BugUnpinnedCallback == 0 {
		// sysfs_schedule_callback done right: the callback pins the
		// attribute's owner, scsi_mod, until it has run.
		return c.ScheduleCallback(work)
	}
	// The 2007 sysfs_schedule_callback: kobject_get (the *Device the
	// closure holds), schedule_work, and nothing to keep scsi_mod's text
	// around until the work runs.
	ml.m.Log().Go("sysfs_schedule_callback_work", func() {
		if ml.CallbackDelay != nil {
			ml.CallbackDelay()
		}
		ml.owner.Call("scsi_remove_device (deferred)", func() {
			ml.m.Record(sim.KindEntered, d.Path(), "deferred scsi_remove_device")
			ml.unregisterDeferred(d)
		})
	})
	return nil
}

// AttrFile is a process's open sysfs attribute, opened by OpenAttr.
type AttrFile struct {
	f      *kernfs.File
	legacy func() // naive: the puts 2007's sysfs made at the last close
}

// OpenAttr opens the attribute at path on the midlayer's machine for
// writing, as `cat > path` does. Correct, it is a kernfs open: it pins the
// attribute's own owner until the open is released, and nothing else.
// With BugLegacyOpen it also grabs, until Close, what 2007's sysfs open
// grabbed for an attribute of a SCSI device: the device (kobject) and the
// module of the driver bound to it.
func (ml *Midlayer) OpenAttr(path string) (*AttrFile, error) {
	f, err := ml.m.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return nil, err
	}
	af := &AttrFile{f: f}
	if ml.bugs&BugLegacyOpen == 0 {
		return af, nil
	}
	ml.mu.Lock()
	s := ml.sdevs[f.Node().Parent()]
	ml.mu.Unlock()
	if s == nil {
		return af, nil
	}
	s.kobj.Get(af)
	var mod *sever.Owner
	if drv := s.dev.Driver(); drv != nil && drv.Owner != nil && drv.Owner.TryGet(af) {
		mod = drv.Owner
	}
	af.legacy = func() {
		if mod != nil {
			mod.Put(af)
		}
		s.kobj.Put(af) // the last put runs scsi_device_dev_release
	}
	return af, nil
}

// Write writes p to the attribute.
func (af *AttrFile) Write(p []byte) (int, error) { return af.f.Write(p) }

// Close closes the file.
func (af *AttrFile) Close() error {
	err := af.f.Close()
	if af.legacy != nil {
		af.legacy()
		af.legacy = nil
	}
	return err
}

// unregisterDeferred is the deferred scsi_remove_device's unregister: no
// one waits for the work, so an error (ENODEV when another removal came
// first) goes to the trace.
func (ml *Midlayer) unregisterDeferred(d *device.Device) {
	if err := d.Unregister(context.Background()); err != nil {
		ml.m.Record(sim.KindStep, d.Path(), "deferred scsi_remove_device: "+err.Error())
	}
}
