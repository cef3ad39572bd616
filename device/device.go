package device

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/internal/ilist"
	"github.com/sever-dev/sever/kernfs"
)

// Config describes a device to register.
type Config struct {
	Name   string  // unique among its siblings: "1-1", "i2c-3", "gpiochip0"
	Parent *Device // nil: a root device under /devices
	Bus    *Bus    // the bus it is matched on; nil for class devices
	Class  *Class  // nil for bus devices
	// Compatible is matched against Driver.IDs on buses without a Match.
	Compatible string
	// Data is the creator's description of the device (a USB descriptor,
	// an I2C address), for Match and Probe. The core never touches it.
	Data any
	// Groups are attribute groups of the device itself (not of a driver),
	// created with the directory and severed when the device is removed.
	Groups []AttrGroup
	// Owner is the module whose code backs Groups; nil if it cannot go.
	Owner *sever.Owner
	// Release, if not nil, is a managed resource of the device itself,
	// added before any driver binds: the creator's cleanup, run once at
	// Unregister after every binding has ended (see ReleaseFunc).
	Release ReleaseFunc
}

// State is a device's place in its lifetime:
//
//	registered ──probe──▶ probing ──ok──▶ bound ──unbind──▶ unbinding ──▶ registered
//	                      probing ──fail (no Remove)──────▶ unbinding
//	registered | probing | bound | unbinding ──Unregister──▶ removing ──▶ removed
//
// Unbinding and removing take the one removal path (see Device.remove);
// from unbinding on, the device takes no new children, bindings or undo
// entries. An unbinding stopped by sever.ErrDeadlock (Unbind called from a
// callback of the binding) stays unbinding, with its driver, until an
// Unbind, the driver's unregistration or Unregister from outside finishes
// it. A device whose Register failed is removed at once. The device
// holds exactly this word; there is no other flag.
type State int

const (
	StateRegistered State = iota // on its bus, no driver
	StateProbing                 // the driver's Probe is running
	StateBound                   // a driver drives it
	StateUnbinding               // the removal path is undoing the binding (an unbind, or a failed Probe)
	StateRemoving                // Unregister is running
	StateRemoved                 // unregistered; only a reference-counted shell is left
)

func (s State) String() string {
	switch s {
	case StateRegistered:
		return "registered"
	case StateProbing:
		return "probing"
	case StateBound:
		return "bound"
	case StateUnbinding:
		return "unbinding"
	case StateRemoving:
		return "removing"
	case StateRemoved:
		return "removed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Device is a node in the machine's device tree: a piece of hardware, or a
// function of one (an I2C adapter, a GPIO chip, an IRQ domain), that a
// driver may bind to. The *Device itself is a reference-counted shell that
// stays valid for as long as anyone holds it; what it represents goes away
// at Unregister.
//
// Everything a binding acquires through the device — managed resources,
// severables (attribute nodes, char devices, providers), child devices — is
// scoped to that binding and undone when it ends; what is acquired while no
// driver is bound is scoped to the device and undone at Unregister.
type Device struct {
	core       *Core
	name       string
	path       string
	parent     *Device
	bus        *Bus
	class      *Class
	compatible string
	data       any
	groups     []AttrGroup
	owner      *sever.Owner
	ref        *sever.Ref
	// inParent is the device's entry on its parent's undo list (stage
	// children), in the parent's scope it was registered in — the parent's
	// binding then, or the parent's own: the device is unregistered when
	// that scope ends. Nil for a root.
	inParent *undoEntry

	// lock is the device lock: probe, unbind and the removal path hold
	// it. Lock order: parent before child; supplier before managed
	// consumer.
	lock sync.Mutex

	mu       sync.Mutex // guards the fields below
	state    State      // from StateUnbinding on: no new children, bindings or undo entries
	driver   *Driver
	bind     *binding // the current binding; nil when unbound
	children siblings // oldest first; each is also an entry of undo[stageChildren]
	// undo is what the removal path undoes — children, severables and
	// resources, each tagged with its scope — one list per stage; undoing
	// holds the entries a removal has taken and not yet undone (see "The
	// undo list" in undo.go).
	undo    [nStages]ilist.List[undoEntry]
	undoing ilist.List[undoEntry]
	undoSeq uint64 // pushes so far: an entry's seq
	drvdata any
	done    chan struct{} // closed when removed

	// ready is closed when Register returns. The device is in its parent's
	// list before that, so a parent's removal can find it half-made;
	// Unregister waits for ready, so it never races Register's own steps
	// (nor its undoing of them on failure).
	ready chan struct{}

	sib   ilist.Links[Device] // place among the parent's children (or the roots)
	onBus ilist.Links[Device] // place on bus.devices, guarded by bus.mu
	onDrv ilist.Links[Device] // place on the bound driver's list, guarded by its mu

	links devLinks // guarded by core.links.mu
	node  *devNode // the device's directory; set by sysfs
}

// binding is one driver's tenure on a device: what must be undone when it
// ends.
type binding struct {
	drv    *Driver
	hidden []*kernfs.Node // the driver's named groups, shown after Probe
	probed bool           // the driver's Probe succeeded: its end calls Remove; guarded by the device's mu
}

// Register adds a device to the machine: it appears in the tree (with its
// directory and standard attributes), on its bus and class, a uevent "add"
// is emitted, and the bus probes matching drivers. A probe failure does not
// fail Register (as in Linux); see Driver and Bind.
//
// A device registered while its parent's driver is probing or bound
// belongs to that binding and is unregistered when it ends; otherwise it is
// unregistered with its parent. Either way it is unregistered before
// anything else of that scope is undone (the removal path's "children"
// step). Register under a parent that is being removed, or whose binding
// is ending, fails with an error wrapping sever.ErrNoDevice; a duplicate
// name among siblings with one wrapping sever.ErrExist.
func (c *Core) Register(ctx context.Context, cfg Config) (*Device, error) {
	if cfg.Name == "" || strings.ContainsRune(cfg.Name, '/') {
		return nil, &sever.ObjectError{Object: "device: " + cfg.Name, Err: sever.ErrInvalid}
	}
	d := &Device{
		core:       c,
		name:       cfg.Name,
		parent:     cfg.Parent,
		bus:        cfg.Bus,
		class:      cfg.Class,
		compatible: cfg.Compatible,
		data:       cfg.Data,
		groups:     cfg.Groups,
		owner:      cfg.Owner,
		done:       make(chan struct{}),
		ready:      make(chan struct{}),
	}
	defer close(d.ready)
	if p := cfg.Parent; p != nil {
		if p.core != c {
			return nil, &sever.ObjectError{Object: "device: " + cfg.Name, Err: fmt.Errorf("parent on another machine: %w", sever.ErrInvalid)}
		}
		d.path = p.path + "/" + cfg.Name
	} else {
		d.path = "/devices/" + cfg.Name
	}
	if cfg.Bus != nil && cfg.Bus.core != c || cfg.Class != nil && cfg.Class.core != c {
		return nil, &sever.ObjectError{Object: d.path, Err: fmt.Errorf("bus or class on another machine: %w", sever.ErrInvalid)}
	}
	d.ref = sever.NewRef(d.path, d.released, c.opts...)

	// Link into the tree: the parent's children (or the roots).
	if p := d.parent; p != nil {
		p.mu.Lock()
		switch {
		case p.refusingLocked():
			p.mu.Unlock()
			return nil, &sever.ObjectError{Object: d.path, Err: fmt.Errorf("parent is being removed or unbound: %w", sever.ErrNoDevice)}
		case !p.children.add(d):
			p.mu.Unlock()
			return nil, &sever.ObjectError{Object: d.path, Err: sever.ErrExist}
		}
		d.inParent = &undoEntry{name: d.path, stage: stageChildren, child: d}
		p.pushLocked(d.inParent)
		p.mu.Unlock()
		p.ref.Get(d) // a child pins its parent's shell until it is released
	} else {
		c.mu.Lock()
		if !c.roots.add(d) {
			c.mu.Unlock()
			return nil, &sever.ObjectError{Object: d.path, Err: sever.ErrExist}
		}
		c.mu.Unlock()
	}
	if cfg.Release != nil {
		d.mu.Lock()
		d.addResourceLocked("release", cfg.Release)
		d.mu.Unlock()
	}
	if err := c.sys.addDevice(d); err != nil {
		d.mu.Lock()
		d.state = StateRemoved // there is nothing to unregister
		var res []*Resource
		l := &d.undo[stageResources]
		for e := l.Front(); e != nil; e = l.Front() {
			d.unpendLocked(e)
			res = append(res, e.res)
		}
		d.mu.Unlock()
		for _, r := range res { // the creator keeps its cleanup
			r.pending.Done()
		}
		if p := d.parent; p != nil {
			// Off the parent's undo list, unless a removal of the parent
			// has taken the entry: its call to Unregister returns at once.
			p.dropEntry(d.inParent)
		}
		d.unlinkFromTree()
		if d.parent != nil {
			d.parent.ref.Put(d)
		}
		close(d.done) // removed: a parent's removal that found it half-made waits for done
		return nil, &sever.ObjectError{Object: d.path, Err: err}
	}
	if b := d.bus; b != nil {
		b.mu.Lock()
		b.devices.PushBack(d, &d.onBus)
		b.mu.Unlock()
	}
	c.uevent(d, ActionAdd, nil)
	if d.bus != nil {
		d.attach(ctx)
	}
	return d, nil
}

// released runs at the last Put of the device's shell.
func (d *Device) released() {
	if d.parent != nil {
		d.parent.ref.Put(d)
	}
}

func (d *Device) unlinkFromTree() {
	if p := d.parent; p != nil {
		p.mu.Lock()
		p.children.remove(d)
		p.mu.Unlock()
		return
	}
	c := d.core
	c.mu.Lock()
	c.roots.remove(d)
	c.mu.Unlock()
}

// Name returns the device's name.
func (d *Device) Name() string { return d.name }

// Path returns the device's path in the tree: "/devices/usb1/1-1".
func (d *Device) Path() string { return d.path }

// String returns the device's path.
func (d *Device) String() string { return d.path }

// Core returns the machine the device belongs to.
func (d *Device) Core() *Core { return d.core }

// Parent returns the parent device, or nil for a root.
func (d *Device) Parent() *Device { return d.parent }

// Bus returns the device's bus, or nil.
func (d *Device) Bus() *Bus { return d.bus }

// Class returns the device's class, or nil.
func (d *Device) Class() *Class { return d.class }

// Compatible returns the match string given at Register.
func (d *Device) Compatible() string { return d.compatible }

// Data returns the creator's description given at Register.
func (d *Device) Data() any { return d.data }

// State returns the device's current state.
func (d *Device) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Driver returns the driver bound (or probing) now, or nil.
func (d *Device) Driver() *Driver {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.driver
}

// Owner returns the owner of the code behind the device now: its driver's
// owner while one is bound, else the nearest bound ancestor's, else the
// owner given at Register. Providers use it to check calls into their ops.
func (d *Device) Owner() *sever.Owner {
	for x := d; x != nil; x = x.parent {
		x.mu.Lock()
		drv := x.driver
		x.mu.Unlock()
		if drv != nil && drv.Owner != nil {
			return drv.Owner
		}
	}
	return d.owner
}

// Children returns the device's children, oldest first.
func (d *Device) Children() []*Device {
	d.mu.Lock()
	defer d.mu.Unlock()
	return deviceSlice(&d.children.list)
}

// Removed returns a channel closed when Unregister has finished.
func (d *Device) Removed() <-chan struct{} { return d.done }

// SetDriverData stores the bound driver's private data. The core clears it
// after Remove, so nothing reaches the driver's state through the device
// once unbound.
func (d *Device) SetDriverData(v any) {
	d.mu.Lock()
	d.drvdata = v
	d.mu.Unlock()
}

// DriverData returns what the bound driver stored with SetDriverData, or nil.
func (d *Device) DriverData() any {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.drvdata
}

// Get takes a reference to the device's shell under tag (get_device). The
// caller must already hold one, or hold the device through the tree. A
// reference keeps the *Device valid, nothing more: it does not keep the
// device registered or its driver bound. References still held when
// Unregister finishes are reported by its audit (see Unregister), naming
// the tag and, with sever.WithTracking, the stack that took it.
func (d *Device) Get(tag any) { d.ref.Get(tag) }

// Put drops a reference taken with Get under tag.
func (d *Device) Put(tag any) { d.ref.Put(tag) }

// Refs returns the number of references held now (the registration's
// included until Unregister finishes).
func (d *Device) Refs() int64 { return d.ref.Count() }

// errNoDevice returns an error naming d that wraps sever.ErrNoDevice.
func (d *Device) errNoDevice(why string) error {
	if why == "" {
		return &sever.ObjectError{Object: d.path, Err: sever.ErrNoDevice}
	}
	return &sever.ObjectError{Object: d.path, Err: fmt.Errorf("%s: %w", why, sever.ErrNoDevice)}
}
