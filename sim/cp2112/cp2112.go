// Package cp2112 simulates seed 000's device (DESIGN.md, "Seed 000"): a
// Silicon Labs CP2112, a USB HID bridge to I2C and GPIO, with an EEPROM and a temperature sensor
// on its I2C bus.
//
// Probing a plugged board registers, as children of the USB device and so
// removed with it children-first:
//
//   - an IRQ domain of 8 interrupts, one per GPIO line (rising edges);
//   - a GPIO chip of 8 lines labelled with the board's serial, with a
//     character device dev/gpiochipN for user space (line requests, values,
//     edge events with poll; see RequestLineEvents);
//   - an I2C adapter with two clients, an EEPROM at 0x50 (driver at24, a
//     binary attribute "eeprom") and a sensor at 0x48 (driver lm75, an
//     attribute "temp1_input").
//
// Unplugging the board (usb.Port.Unplug) takes the removal path of
// DESIGN.md: the adapter and its clients, the chip and its char device, the
// domain — whose removal frees every IRQ consumers requested on it, so a
// consumer elsewhere (sim/gpiokeys) keeps a shell whose Free still works —
// then the driver's Remove, then its managed resources.
//
// The naive driver (BugLeakIRQs) keeps the pre-fix shape the seed thread
// argued about: its interrupt domain is the driver's own, and removing it
// frees the descriptors without detaching the interrupts consumers
// requested. Consumers never learn; the per-IRQ entry (/irq/N with the
// consumer's action under it, the procfs entry whose leak started the
// thread) outlives the domain, and the consumer's later free_irq touches a
// freed descriptor.
package cp2112

import (
	"context"
	"fmt"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/gpio"
	"github.com/sever-dev/sever/subsys/i2c"
	"github.com/sever-dev/sever/subsys/irq"
	"github.com/sever-dev/sever/subsys/usb"
)

// The CP2112's USB IDs.
const (
	Vendor  = 0x10C4
	Product = 0xEA90
)

// Bugs selects naive behaviours; zero is the correct driver.
type Bugs uint

// BugLeakIRQs makes the driver's interrupt domain its own, removed by
// freeing its descriptors without detaching the interrupts requested on
// them (seed 000).
const BugLeakIRQs Bugs = 1 << iota

// Register registers the cp2112 driver, whose code is owner (module
// "cp2112"), on m's USB bus.
func Register(ctx context.Context, m *sim.Machine, owner *sever.Owner, bugs Bugs) (*device.Driver, error) {
	drv := &device.Driver{
		Name:   "cp2112",
		Owner:  owner,
		IDs:    []string{usb.ID(Vendor, Product)},
		Probe:  func(ctx context.Context, d *device.Device) error { return probe(ctx, m, owner, bugs, d) },
		Remove: remove,
	}
	return drv, usb.Bus(m.Core()).RegisterDriver(ctx, drv)
}

type hwKey struct{}

type boards struct {
	mu      sync.Mutex
	byName  map[string]*Hardware
	bridges map[string]*Bridge // bound bridges by label
}

func boardsOf(c *device.Core) *boards {
	return device.Local(c, hwKey{}, func() *boards {
		return &boards{byName: make(map[string]*Hardware), bridges: make(map[string]*Bridge)}
	})
}

// Plug connects hw to port on m: the board is enumerated and, if the
// cp2112 driver is registered, bound.
func Plug(ctx context.Context, m *sim.Machine, port *usb.Port, hw *Hardware) (*usb.Device, error) {
	b := boardsOf(m.Core())
	b.mu.Lock()
	b.byName[hw.serial] = hw
	b.mu.Unlock()
	m.Record(sim.KindStep, "usb", "plug "+hw.serial)
	return port.Plug(ctx, usb.Descriptor{Vendor: Vendor, Product: Product, Name: hw.serial})
}

// Bridge is a bound CP2112: what its driver registered. It is valid as a
// value after the board is unplugged; its accessors then return the shells
// of what was registered.
type Bridge struct {
	m      *sim.Machine
	dev    *device.Device
	u      *usb.Device
	hw     *Hardware
	owner  *sever.Owner
	label  string
	state  *check.State[*Hardware] // the driver's private data (struct cp2112_device)
	intr   *sever.Active           // the interrupt URB: the board's path into the driver
	adap   *i2c.Adapter
	chip   *gpio.Chip
	domain *irq.Domain
	legacy *legacyDomain // naive
	cdev   *chardev.Cdev
}

// Lookup returns the bridge bound to the board labelled label (its serial)
// on machine c, or an error wrapping sever.ErrNoDevice.
func Lookup(c *device.Core, label string) (*Bridge, error) {
	b := boardsOf(c)
	b.mu.Lock()
	defer b.mu.Unlock()
	if br := b.bridges[label]; br != nil {
		return br, nil
	}
	return nil, &sever.ObjectError{Object: "cp2112 " + label, Err: sever.ErrNoDevice}
}

// Device returns the USB device the bridge is bound to.
func (b *Bridge) Device() *device.Device { return b.dev }

// Chip returns the bridge's GPIO chip.
func (b *Bridge) Chip() *gpio.Chip { return b.chip }

// Adapter returns the bridge's I2C adapter.
func (b *Bridge) Adapter() *i2c.Adapter { return b.adap }

// CdevName returns the name of the GPIO chip's char device under dev/.
func (b *Bridge) CdevName() string { return b.cdev.Name() }

func probe(ctx context.Context, m *sim.Machine, owner *sever.Owner, bugs Bugs, d *device.Device) error {
	u := usb.FromDevice(d)
	bs := boardsOf(d.Core())
	bs.mu.Lock()
	hw := bs.byName[u.Descriptor().Name]
	bs.mu.Unlock()
	if hw == nil {
		return &sever.ObjectError{Object: d.Path(), Err: fmt.Errorf("no board answers: %w", sever.ErrNoDevice)}
	}
	b := &Bridge{m: m, dev: d, u: u, hw: hw, owner: owner, label: hw.serial,
		intr: sever.NewActive(d.Path()+" interrupt URB", m.Options()...)}
	b.state = check.NewState(m.Log(), d.Path()+" cp2112 driver data", hw)
	// Managed resources are released newest first, after Remove: the
	// driver data goes last, when nothing can reach it.
	if _, err := d.AddResource("driver data", func() {
		b.state.Free()
		m.Record(sim.KindFreed, d.Path(), "cp2112 driver data")
	}); err != nil {
		return err
	}
	var err error
	// The interrupt domain first, then the chip, then the adapter: the
	// removal path takes children newest first, so the adapter goes
	// first and the domain last, as cp2112_remove does (seed 000).
	if bugs&BugLeakIRQs != 0 {
		b.legacy = newLegacyDomain(b)
		if _, err := d.AddResource("irq domain (driver's own)", b.legacy.remove); err != nil {
			return err
		}
	} else if b.domain, err = irq.AddDomain(ctx, d, b.label, Lines); err != nil {
		return err
	}
	if b.chip, err = gpio.AddChip(ctx, d, b.label, Lines, gpioOps{b}); err != nil {
		return err
	}
	if b.cdev, err = registerCdev(b); err != nil {
		return err
	}
	if b.adap, err = i2c.AddAdapter(ctx, d, algo{b}); err != nil {
		return err
	}
	nr := b.adap.Nr()
	if _, err := b.adap.NewClient(ctx, fmt.Sprintf("%d-%04x", nr, EEPROMAddr), EEPROMCompatible, EEPROMAddr); err != nil {
		return err
	}
	if _, err := b.adap.NewClient(ctx, fmt.Sprintf("%d-%04x", nr, SensorAddr), SensorCompatible, SensorAddr); err != nil {
		return err
	}
	bs.mu.Lock()
	bs.bridges[b.label] = b
	bs.mu.Unlock()
	if _, err := d.AddResource("bridge table", func() {
		bs.mu.Lock()
		delete(bs.bridges, b.label)
		bs.mu.Unlock()
	}); err != nil {
		return err
	}
	d.SetDriverData(b)
	hw.arm(b.interrupt)
	m.Record(sim.KindEntered, d.Path(), "cp2112_probe: domain, gpiochip, "+b.cdev.Name()+", i2c adapter with 2 clients")
	return nil
}

// remove is cp2112_remove. The children (adapter, chip, domain) and the
// char device are gone already: no consumer call into the driver runs now
// or later. It stops the interrupt URB; the driver data is freed by its
// managed resource after this returns.
func remove(ctx context.Context, d *device.Device) {
	b := d.DriverData().(*Bridge)
	b.m.Record(sim.KindEntered, d.Path(), "cp2112_remove")
	b.hw.arm(nil)
	b.m.Record(sim.KindSevered, d.Path()+" interrupt URB", "usb_kill_urb")
	if err := b.intr.Sever(ctx); err != nil {
		// Past the removal's deadline: the checker has recorded it.
		b.m.Record(sim.KindStep, d.Path()+" interrupt URB", "usb_kill_urb: "+err.Error())
		return
	}
	b.m.Record(sim.KindDrained, d.Path()+" interrupt URB", "no interrupt runs now or later")
}

// interrupt is the interrupt URB's completion: an edge on line. It runs
// the GPIO chip's edge events, the line's IRQ on rising edges, and wakes
// the char device's pollers.
func (b *Bridge) interrupt(line int, rising bool) {
	// After usb_kill_urb the completion does not run (ENODEV): the edge is
	// lost with the board, as on the wire. So are an edge and an IRQ whose
	// chip or domain is being removed (their ENODEV) — no one to tell.
	_ = b.intr.Do(func() error {
		b.owner.Call("cp2112_gpio_irq", func() {
			if _, ok := b.state.Use("cp2112_gpio_irq"); !ok {
				return
			}
			_ = b.chip.Edge(line, rising)
			if rising {
				if b.legacy != nil {
					b.legacy.fire(line)
				} else {
					_, _ = b.domain.Fire(line)
				}
			}
			b.cdev.Notify(sever.EventIn)
		})
		return nil
	})
}

// gpioOps is the chip's provider side; the gpio subsystem calls it only
// while the chip is live.
type gpioOps struct{ b *Bridge }

func (o gpioOps) Get(line int) (v bool, err error) {
	err = o.b.u.IO(context.Background(), func(ctx context.Context) error {
		hw, ok := o.b.state.Use("cp2112_gpio_get")
		if !ok {
			return sever.ErrIO
		}
		v = hw.get(line)
		return nil
	})
	return v, err
}

func (o gpioOps) Set(line int, v bool) error {
	return o.b.u.IO(context.Background(), func(ctx context.Context) error {
		hw, ok := o.b.state.Use("cp2112_gpio_set")
		if !ok {
			return sever.ErrIO
		}
		hw.set(line, v)
		return nil
	})
}

// algo is the adapter's provider side (cp2112_xfer).
type algo struct{ b *Bridge }

func (a algo) Xfer(ctx context.Context, msgs []i2c.Msg) (n int, err error) {
	err = a.b.u.IO(ctx, func(ctx context.Context) error {
		hw, ok := a.b.state.Use("cp2112_xfer")
		if !ok {
			return sever.ErrIO
		}
		for _, msg := range msgs {
			if !hw.i2c(msg.Addr, msg.Read, msg.Data) {
				return fmt.Errorf("no ACK from 0x%02x: %w", msg.Addr, sever.ErrIO)
			}
			n++
		}
		return nil
	})
	return n, err
}

// IRQ is a consumer's requested interrupt on a bridge's GPIO line. It is
// what gpiokeys.IRQ asks for; irq.Request satisfies it.
type IRQ interface {
	IRQ() int
	Err() error
	Free(ctx context.Context) error
}

// RequestIRQ requests the interrupt of GPIO line on the bridge labelled
// label on machine c for handler, under name — gpiod_to_irq and
// request_irq, as a consumer's firmware description names it. It fails
// with an error wrapping sever.ErrNoDevice if no such bridge is bound.
func RequestIRQ(c *device.Core, label string, line int, name string, handler irq.Handler) (IRQ, error) {
	b, err := Lookup(c, label)
	if err != nil {
		return nil, err
	}
	if b.legacy != nil {
		return b.legacy.request(line, name, handler)
	}
	n, err := b.domain.Map(line)
	if err != nil {
		return nil, err
	}
	return irq.RequestIRQ(c, n, name, handler)
}
