// Package usb is the USB subsystem: a host with ports; plugging a device
// into a port enumerates it and binds a driver, unplugging it is a surprise
// removal through the driver core's one removal path (DESIGN.md, "The way
// of a hot-unplug").
//
// On Unplug the hardware goes first: every I/O in flight is canceled and
// every later one fails with an error wrapping sever.ErrNoDevice, so the
// driver callbacks the removal path then runs see hardware that is gone
// and never block on it.
package usb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
)

// Descriptor is what enumeration reads from a device.
type Descriptor struct {
	Vendor, Product uint16
	Name            string
}

// ID returns the compatible string a driver lists in Driver.IDs to match
// devices with this vendor and product: "usb:v10C4p8590".
func ID(vendor, product uint16) string { return fmt.Sprintf("usb:v%04Xp%04X", vendor, product) }

type key struct{}

// Bus returns the machine's USB bus, on which USB drivers register.
func Bus(c *device.Core) *device.Bus {
	return device.Local(c, key{}, func() *device.Bus {
		b, err := c.NewBus(device.BusConfig{Name: "usb", Uevent: func(d *device.Device, env map[string]string) {
			if u := FromDevice(d); u != nil {
				env["PRODUCT"] = fmt.Sprintf("%x/%x", u.desc.Vendor, u.desc.Product)
			}
		}})
		if err != nil {
			b = c.Bus("usb")
		}
		return b
	})
}

// Host is a USB host controller with its root hub's ports.
type Host struct {
	root  *device.Device
	ports []*Port
}

// NewHost registers a host named name ("usb1") with n ports.
func NewHost(ctx context.Context, c *device.Core, name string, n int) (*Host, error) {
	Bus(c)
	root, err := c.Register(ctx, device.Config{Name: name})
	if err != nil {
		return nil, err
	}
	h := &Host{root: root}
	for i := range n {
		h.ports = append(h.ports, &Port{h: h, n: i + 1})
	}
	return h, nil
}

// Port returns port n, from 1.
func (h *Host) Port(n int) *Port { return h.ports[n-1] }

// Root returns the root hub's device.
func (h *Host) Root() *device.Device { return h.root }

// Remove unplugs every port and removes the host. It returns the errors of
// the unplugs and of the host's removal, joined.
func (h *Host) Remove(ctx context.Context) error {
	var errs []error
	for _, p := range h.ports {
		if err := p.Unplug(ctx); err != nil && !errors.Is(err, sever.ErrNoDevice) {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, h.root.Unregister(ctx))...)
}

// Port is one port of a host.
type Port struct {
	h  *Host
	n  int
	mu sync.Mutex
	d  *Device
}

// Device is a plugged-in USB device: the hardware, as its driver reaches it.
type Device struct {
	// dev is set when Register returns, after the driver's Probe (which
	// runs inside Register) may already have handed u to other goroutines:
	// atomic, so they read nil or the device, never a race.
	dev  atomic.Pointer[device.Device]
	desc Descriptor
	ctx  context.Context // canceled at unplug: the wire is cut
	cut  context.CancelFunc
}

// FromDevice returns the USB device d represents, or nil.
func FromDevice(d *device.Device) *Device {
	u, _ := d.Data().(*Device)
	return u
}

// Descriptor returns the device's descriptor.
func (u *Device) Descriptor() Descriptor { return u.desc }

// Device returns the device's node in the driver core.
func (u *Device) Device() *device.Device { return u.dev.Load() }

// IO performs one transfer with the hardware: fn runs with a context that
// is canceled the moment the device is unplugged. Once unplugged, IO
// returns an error wrapping sever.ErrNoDevice without calling fn, and an
// fn cut off by the unplug has its error replaced by that one. Driver
// callbacks use IO for every hardware access, so none blocks on hardware
// that is gone.
func (u *Device) IO(ctx context.Context, fn func(ctx context.Context) error) error {
	if u.ctx.Err() != nil {
		return u.errGone()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(u.ctx, cancel)
	defer stop()
	err := fn(ctx)
	if u.ctx.Err() != nil {
		return u.errGone()
	}
	return err
}

// Connected reports whether the device is still plugged in.
func (u *Device) Connected() bool { return u.ctx.Err() == nil }

func (u *Device) errGone() error {
	return &sever.ObjectError{Object: u.path(), Err: fmt.Errorf("unplugged: %w", sever.ErrNoDevice)}
}

// Plug connects a device with desc to the port: it is enumerated as
// "<bus>-<port>" under the root hub, a uevent "add" is emitted, and a
// matching driver binds. Plugging into an occupied port fails with an
// error wrapping sever.ErrBusy.
func (p *Port) Plug(ctx context.Context, desc Descriptor) (*Device, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.d != nil {
		return nil, &sever.ObjectError{Object: fmt.Sprintf("%s port %d", p.h.root.Path(), p.n), Err: sever.ErrBusy}
	}
	c := p.h.root.Core()
	u := &Device{desc: desc}
	u.ctx, u.cut = context.WithCancel(context.Background())
	dev, err := c.Register(ctx, device.Config{
		Name:       fmt.Sprintf("%s-%d", strings.TrimPrefix(p.h.root.Name(), "usb"), p.n),
		Parent:     p.h.root,
		Bus:        Bus(c),
		Compatible: ID(desc.Vendor, desc.Product),
		Data:       u,
		Release:    device.ReleaseFunc(u.cut),
	})
	if err != nil {
		u.cut()
		return nil, err
	}
	u.dev.Store(dev)
	p.d = u
	return u, nil
}

// Device returns the device in the port, or nil.
func (p *Port) Device() *Device {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d
}

// Unplug is a surprise removal: the wire is cut first (I/O in flight is
// canceled, later I/O fails with ErrNoDevice), then the device goes
// through the one removal path — children bottom-up, files and char
// devices severed, provider handles revoked, driver Remove, managed
// resources, owner pin, uevent. It returns when no callback into the
// device's drivers runs or will run; it never waits for consumers to close
// their handles. Unplugging an empty port does nothing.
func (p *Port) Unplug(ctx context.Context) error {
	p.mu.Lock()
	u := p.d
	p.d = nil
	p.mu.Unlock()
	if u == nil {
		return nil
	}
	u.cut()
	return u.dev.Load().Unregister(ctx)
}

func (u *Device) path() string {
	if d := u.dev.Load(); d != nil {
		return d.Path()
	}
	return fmt.Sprintf("usb device %04x:%04x", u.desc.Vendor, u.desc.Product)
}
