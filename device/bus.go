package device

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/internal/ilist"
)

// MatchFunc reports whether drv can drive d. It is bus code, not driver
// code: it is called with no device lock held, on the goroutine registering
// the device or the driver, any number of times; it must not block and must
// touch nothing but d's and drv's configuration.
type MatchFunc func(d *Device, drv *Driver) bool

// UeventFunc adds a bus's or class's variables to a device's uevent
// environment. It is called once per uevent of d, on the goroutine emitting
// it, with d's lock possibly held; it must not block or call into d.
type UeventFunc func(d *Device, env map[string]string)

// BusConfig describes a bus.
type BusConfig struct {
	Name string
	// Match decides which drivers fit a device. Nil: a driver matches a
	// device whose Compatible string is one of the driver's IDs.
	Match MatchFunc
	// Uevent adds bus variables (MODALIAS, PRODUCT) to uevents. May be nil.
	Uevent UeventFunc
	// SuppressBindAttrs removes the driver's bind and unbind control files:
	// the bus does not allow userspace to unbind its devices.
	SuppressBindAttrs bool
}

// Bus matches devices to drivers: registering either side probes every
// unbound device against every fitting driver.
type Bus struct {
	core *Core
	cfg  BusConfig

	mu      sync.Mutex
	drivers []*Driver
	devices ilist.List[Device] // oldest first, through each device's onBus
}

// NewBus registers a bus on the machine. A second bus of the same name is
// refused with an error wrapping sever.ErrExist.
func (c *Core) NewBus(cfg BusConfig) (*Bus, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("device: bus without a name: %w", sever.ErrInvalid)
	}
	c.mu.Lock()
	if _, ok := c.buses[cfg.Name]; ok {
		c.mu.Unlock()
		return nil, &sever.ObjectError{Object: "device: bus " + cfg.Name, Err: sever.ErrExist}
	}
	b := &Bus{core: c, cfg: cfg}
	c.buses[cfg.Name] = b
	c.mu.Unlock()
	c.sys.addBus(b)
	return b, nil
}

// Bus returns the bus named name, or nil.
func (c *Core) Bus(name string) *Bus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buses[name]
}

// Name returns the bus's name ("usb", "i2c").
func (b *Bus) Name() string { return b.cfg.Name }

// Core returns the machine the bus belongs to.
func (b *Bus) Core() *Core { return b.core }

// Devices returns the devices on the bus, oldest first.
func (b *Bus) Devices() []*Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	return deviceSlice(&b.devices)
}

// Drivers returns the drivers registered on the bus, oldest first.
func (b *Bus) Drivers() []*Driver {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.drivers)
}

func (b *Bus) match(d *Device, drv *Driver) bool {
	if b.cfg.Match != nil {
		return b.cfg.Match(d, drv)
	}
	return d.compatible != "" && slices.Contains(drv.IDs, d.compatible)
}

// ProbeFunc binds a driver to a device: it allocates the driver's state,
// initializes the hardware and registers with upper layers (providers,
// child devices, attributes), in that order (seed 004 §2-1).
//
// When: once per binding attempt, after the device is registered and
// matched, or on a bind request. On which goroutine: the one registering
// the device or the driver, with the device lock held — Probe must not
// unregister its own device. What may be gone: nothing; the device and the
// owner are pinned. What it may touch: the device, its parent, its
// Config.Data, and anything it acquires through the device (resources,
// providers, links). May it block: yes, on its own hardware, honoring ctx.
//
// A non-nil error fails the binding: everything Probe added through the
// device — resources, groups, children, severables, providers — is undone in
// reverse order, exactly as at unbind, and Remove is not called. A panic is
// recovered, recorded as check.DriverFault and treated as an error.
type ProbeFunc func(ctx context.Context, d *Device) error

// RemoveFunc unbinds a driver from a device, the reverse of Probe:
// deinitialize the controller and release what devres does not.
//
// When: exactly once per successful Probe, when the driver unbinds (device
// unregister, driver unregister, owner unload, unbind request, supplier
// removal). On which goroutine: the unbinding one, with the device lock
// held. What is already gone: the device's children, its attribute nodes
// and char devices (severed: no attribute callback runs now or later), its
// provider handles (revoked: no consumer call runs now or later); on a
// surprise removal, the hardware — I/O fails fast with ErrNoDevice. What
// is still there: the driver's own state and its managed resources, which
// are released after Remove returns. May it block: briefly on its own
// work, never on hardware or on consumers; ctx bounds it. After Remove
// returns, nothing calls into the driver for this device again.
type RemoveFunc func(ctx context.Context, d *Device)

// Driver drives matching devices on one bus. The fields are configuration,
// read at RegisterDriver; changing them afterwards has no effect on
// bindings in progress.
type Driver struct {
	Name string
	// Owner is the module whose code the driver's callbacks are. Each
	// bound device pins it; unloading it unbinds them (UnloadForce) or is
	// refused while any is bound (UnloadTry). Nil: the driver cannot be
	// unloaded and calls into it are not checked.
	Owner *sever.Owner
	// IDs are the Compatible strings the driver matches under a bus
	// without its own Match.
	IDs    []string
	Probe  ProbeFunc
	Remove RemoveFunc
	// Groups are the driver's attribute groups, created in each bound
	// device's directory invisible before Probe, shown when Probe
	// succeeds, removed if it fails, and severed before Remove.
	Groups []AttrGroup

	mu         sync.Mutex
	bus        *Bus
	bound      ilist.List[Device] // oldest first, through each device's onDrv
	cancelHook func()
	gone       bool
}

// Bus returns the bus the driver is registered on, or nil.
func (drv *Driver) Bus() *Bus {
	drv.mu.Lock()
	defer drv.mu.Unlock()
	return drv.bus
}

// Devices returns the devices bound to drv now.
func (drv *Driver) Devices() []*Device {
	drv.mu.Lock()
	defer drv.mu.Unlock()
	return deviceSlice(&drv.bound)
}

// RegisterDriver adds drv to the bus and probes it against every unbound
// matching device. If drv has an Owner, unloading the owner unregisters
// the driver (unbinding its devices first). Registering a driver twice, or
// on a gone owner, fails (sever.ErrExist, sever.ErrNoDevice).
func (b *Bus) RegisterDriver(ctx context.Context, drv *Driver) error {
	obj := "device: driver " + b.cfg.Name + "/" + drv.Name
	drv.mu.Lock()
	if drv.bus != nil || drv.gone {
		drv.mu.Unlock()
		return &sever.ObjectError{Object: obj, Err: sever.ErrExist}
	}
	drv.bus = b
	drv.mu.Unlock()
	if drv.Owner != nil {
		cancel, err := drv.Owner.OnUnload("driver "+b.cfg.Name+"/"+drv.Name, func(ctx context.Context) error {
			return b.unregisterDriver(ctx, drv, false)
		})
		if err != nil {
			drv.mu.Lock()
			drv.bus = nil
			drv.mu.Unlock()
			return &sever.ObjectError{Object: obj, Err: err}
		}
		drv.mu.Lock()
		drv.cancelHook = cancel
		drv.mu.Unlock()
	}
	b.mu.Lock()
	b.drivers = append(b.drivers, drv)
	devs := deviceSlice(&b.devices)
	b.mu.Unlock()
	b.core.sys.addDriver(b, drv)
	for _, d := range devs {
		if d.Driver() == nil && b.match(d, drv) {
			_ = d.probe(ctx, drv) // errors stay with the device, as in Linux
		}
	}
	return nil
}

// UnregisterDriver unbinds drv from every device, each through the one
// removal path, and removes it from the bus. It returns the first unbind
// error; the driver is unregistered either way.
func (b *Bus) UnregisterDriver(ctx context.Context, drv *Driver) error {
	return b.unregisterDriver(ctx, drv, true)
}

func (b *Bus) unregisterDriver(ctx context.Context, drv *Driver, cancelHook bool) error {
	drv.mu.Lock()
	if drv.bus != b || drv.gone {
		drv.mu.Unlock()
		return &sever.ObjectError{Object: "device: driver " + drv.Name, Err: sever.ErrNotExist}
	}
	drv.gone = true // no new bindings from here on
	cancel := drv.cancelHook
	drv.mu.Unlock()
	if cancelHook && cancel != nil {
		cancel()
	}
	b.mu.Lock()
	b.drivers = slices.DeleteFunc(b.drivers, func(x *Driver) bool { return x == drv })
	b.mu.Unlock()
	var first error
	for _, d := range drv.Devices() {
		if err := d.unbindDriver(ctx, drv); err != nil && first == nil {
			first = err
		}
	}
	b.core.sys.removeDriver(b, drv)
	return first
}

func (drv *Driver) live() bool {
	drv.mu.Lock()
	defer drv.mu.Unlock()
	return !drv.gone
}

func (drv *Driver) dropBound(d *Device) {
	drv.mu.Lock()
	drv.bound.Remove(&d.onDrv)
	drv.mu.Unlock()
}

// Class groups devices by what they do ("gpio", "input") rather than how
// they connect. A class device appears under /class/<name>.
type Class struct {
	core   *Core
	name   string
	uevent UeventFunc
}

// NewClass registers a class. A second class of the same name is refused
// with an error wrapping sever.ErrExist. uevent may be nil.
func (c *Core) NewClass(name string, uevent UeventFunc) (*Class, error) {
	c.mu.Lock()
	if _, ok := c.classes[name]; ok {
		c.mu.Unlock()
		return nil, &sever.ObjectError{Object: "device: class " + name, Err: sever.ErrExist}
	}
	cl := &Class{core: c, name: name, uevent: uevent}
	c.classes[name] = cl
	c.mu.Unlock()
	c.sys.addClass(cl)
	return cl, nil
}

// Class returns the class named name, or nil.
func (c *Core) Class(name string) *Class {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.classes[name]
}

// Name returns the class's name.
func (cl *Class) Name() string { return cl.name }
