// Package gpiokeys is a gpio-keys-like consumer for seed 000 (DESIGN.md,
// "Seed 000"): a platform
// device (a devicetree node) with one key on a GPIO line of some other
// device, whose interrupt it requests. It counts presses and shows the
// count as an attribute.
//
// It is the consumer the seed thread is about: one that is not removed in
// the provider's hot-unplug chain. When the provider goes, gpio-keys stays
// bound: its IRQ is freed by the provider's domain removal (its handler
// never runs again, its Free at unbind touches nothing of the provider),
// its next call through its GPIO line returns ErrNoDevice, and it keeps
// serving its other attributes.
//
// Its attributes, in its device directory:
//
//	presses  the rising edges counted (keeps working after the provider goes)
//	value    the key line's level, read through the line (ENODEV once gone)
//	irq      the interrupt number, and "(provider gone)" once it is
package gpiokeys

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/gpio"
	"github.com/sever-dev/sever/subsys/irq"
)

// IRQ is a requested interrupt as the consumer holds it: irq.Request
// satisfies it. Err reports whether the provider is gone; Free releases
// it and must work whether or not the provider is.
type IRQ interface {
	IRQ() int
	Err() error
	Free(ctx context.Context) error
}

// Config describes one gpio-keys device: the devicetree node.
type Config struct {
	Name string // the platform device's name: "gpio-keys.0"
	Chip string // the GPIO chip's label
	Line int    // the key's line on the chip
	// RequestIRQ requests the key's interrupt for handler (what the
	// node's "interrupts" property resolves to). It is called from Probe.
	RequestIRQ func(name string, handler irq.Handler) (IRQ, error)
}

// Register registers the gpio-keys driver, whose code is owner (module
// "gpio_keys"), on m's platform bus.
func Register(ctx context.Context, m *sim.Machine, owner *sever.Owner) (*device.Driver, error) {
	drv := &device.Driver{
		Name:   "gpio-keys",
		Owner:  owner,
		IDs:    []string{"gpio-keys"},
		Probe:  func(ctx context.Context, d *device.Device) error { return probe(ctx, m, d) },
		Groups: []device.AttrGroup{{Attrs: attrs}},
	}
	return drv, m.Platform().RegisterDriver(ctx, drv)
}

// AddDevice registers a gpio-keys platform device described by cfg on m.
func AddDevice(ctx context.Context, m *sim.Machine, cfg Config) (*device.Device, error) {
	return m.Core().Register(ctx, device.Config{Name: cfg.Name, Bus: m.Platform(), Compatible: "gpio-keys", Data: cfg})
}

// keys is the driver's private data.
type keys struct {
	m       *sim.Machine
	line    *gpio.Line
	irq     IRQ
	presses atomic.Int64
	state   *check.State[*keys] // freed at unbind, after the IRQ is freed
}

// Presses returns the presses counted by the gpio-keys driver bound to d,
// or -1 if none is.
func Presses(d *device.Device) int64 {
	if k, ok := d.DriverData().(*keys); ok {
		return k.presses.Load()
	}
	return -1
}

func probe(ctx context.Context, m *sim.Machine, d *device.Device) error {
	cfg := d.Data().(Config)
	k := &keys{m: m}
	k.state = check.NewState(m.Log(), d.Path()+" gpio-keys driver data", k)
	// Added first, released last: after the IRQ is freed, no handler can
	// reach the state.
	if _, err := d.AddResource("driver data", func() {
		k.state.Free()
		m.Record(sim.KindFreed, d.Path(), "gpio-keys driver data")
	}); err != nil {
		return err
	}
	chip, err := gpio.Lookup(d.Core(), cfg.Chip)
	if err != nil {
		return err
	}
	if k.line, err = chip.RequestLine(cfg.Line, "gpio-keys"); err != nil {
		return err
	}
	// gpiod_put: ENODEV when the chip went first and freed the request
	// with itself; the line is free either way.
	if _, err := d.AddResource("gpio line", func() { _ = k.line.Close() }); err != nil {
		return errors.Join(err, k.line.Close())
	}
	// devm_request_irq: freed when the binding ends, whether or not the
	// provider is still there.
	if k.irq, err = cfg.RequestIRQ("gpio-keys", k.handle); err != nil {
		return err
	}
	path := d.Path()
	if _, err := d.AddResource("irq", func() {
		detail := fmt.Sprintf("free_irq %d", k.irq.IRQ())
		if err := k.irq.Free(context.Background()); err != nil {
			detail += ": " + err.Error()
		}
		m.Record(sim.KindReleased, path, detail)
	}); err != nil {
		return errors.Join(err, k.irq.Free(ctx))
	}
	d.SetDriverData(k)
	return nil
}

// handle is the key's interrupt handler.
func (k *keys) handle(n int) {
	if _, ok := k.state.Use("gpio_keys_irq_isr"); ok {
		k.presses.Add(1)
	}
}

var attrs = []device.Attr{
	{Name: "presses", Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
		return fmt.Appendf(buf, "%d\n", d.DriverData().(*keys).presses.Load()), nil
	}},
	{Name: "value", Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
		v, err := d.DriverData().(*keys).line.Value()
		if err != nil {
			return nil, err
		}
		if v {
			return append(buf, "1\n"...), nil
		}
		return append(buf, "0\n"...), nil
	}},
	{Name: "irq", Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
		r := d.DriverData().(*keys).irq
		if r.Err() != nil {
			return fmt.Appendf(buf, "%d (provider gone)\n", r.IRQ()), nil
		}
		return fmt.Appendf(buf, "%d\n", r.IRQ()), nil
	}},
}
