// Package pc is the standard simulated machine: the one `sever mount`
// serves, with a piece of every seed on it, each built from its sim
// sub-package the way the seed scenarios build them.
//
// What Boot puts on the machine, with its modules:
//
//	usb1                   a USB host with Ports ports (default 4); a CP2112
//	                       (cp2112, at24, lm75) plugged into port 1: a GPIO
//	                       chip with dev/gpiochipN, an I2C adapter with an
//	                       EEPROM and a temperature sensor
//	gpio-keys.0            a platform device (gpio_keys) with a key on line
//	                       KeyLine of the board in port 1, whose interrupt
//	                       it requests: the consumer of seed 000
//	zram0                  a compressed RAM disk (zram), with the
//	                       zram-control device: seed 001
//	/fs/cgroup/sever       a cgroup with a cpu.pressure file: seed 002
//	tcmu0, uioN            a tcmu device (target_core_user, uio) whose uio
//	                       char device a daemon would map: seed 003
//	ahci.0, host0, sda     an AHCI controller (ahci, libata) with one disk
//	                       (scsi_mod, sd_mod), whose SCSI device has the
//	                       "delete" attribute: seed 004
//
// Every module has its /module/<name> directory (see sim.Machine.Unload).
//
// The USB ports are controlled through sysfs, as a test rig's switchable
// hub would be, under /bus/usb/ports/<N>/:
//
//	connect     write a device name (see Devices): plug a new board of
//	            that kind into the port. An unknown name is EINVAL, an
//	            occupied port EBUSY.
//	disconnect  write 1: unplug the port's board — a surprise removal
//	            through the one removal path. An empty port is ENODEV.
//	device      read: the kind of board in the port, or "none"
//	sim/        present while a board is in the port: the board's side of
//	            the wire, which the simulation lets you drive. For a
//	            cp2112: line0 … line7 (read the level; write 1 or 0 to
//	            drive the input, which raises the edge interrupt when it
//	            changes) and temp (the sensor's reading in millidegrees
//	            Celsius; write to change it).
//
// The controls are built-in code: writing them pins no module, and a
// disconnect — which runs the whole unplug path from inside the Store of a
// node that is not under the device it removes — is not a self-removal.
// Connects and disconnects of one port are serialized; a second disconnect
// waits for the first and then finds the port empty.
package pc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/sim/gpiokeys"
	"github.com/sever-dev/sever/sim/psi"
	"github.com/sever-dev/sever/sim/scsi"
	"github.com/sever-dev/sever/sim/tcmu"
	"github.com/sever-dev/sever/sim/zram"
	"github.com/sever-dev/sever/subsys/irq"
	"github.com/sever-dev/sever/subsys/usb"
)

// KeyLine is the line of the board in port 1 that gpio-keys.0 watches.
const KeyLine = 2

// DiskSectors is the size of the SCSI disk sda, in 512-byte sectors.
const DiskSectors = 2048

// unplugTimeout bounds the removal a disconnect runs: calls in flight are
// bounded, so reaching it means a removal is stuck, which the machine's
// log then records (check.SeverTimeout).
const unplugTimeout = time.Minute

// Option configures Boot.
type Option func(*config)

type config struct {
	ports    int
	tracking bool
	hostCmd  []string // DriverHosts
}

// Ports gives the USB host n ports (at least 1; default 4).
func Ports(n int) Option { return func(c *config) { c.ports = max(n, 1) } }

// WithTracking makes the machine record who takes every reference (see
// sim.WithTracking); it is slower.
func WithTracking() Option { return func(c *config) { c.tracking = true } }

// Devices returns the names of the boards a port's connect accepts.
func Devices() []string { return []string{"cp2112"} }

// PC is a booted standard machine. It is safe for concurrent use. Its
// life ends with Quiesce.
type PC struct {
	m     *sim.Machine
	host  *usb.Host
	ports []*port
	sd    *scsi.SD
	keys  *device.Device
	cg    *psi.Group
	zram  *zram.Module
	tcmu  *tcmu.Dev
	hosts []*drvhost.Supervisor
}

// port is one USB port and its controls.
type port struct {
	pc  *PC
	n   int
	usb *usb.Port
	dir *kernfs.Node // /bus/usb/ports/<n>

	mu   sync.Mutex // serializes connect and disconnect
	kind string     // the board's kind; "" when empty
	hw   *cp2112.Hardware
	sim  *kernfs.Node // <dir>/sim while a board is in
}

// Boot builds the standard machine named name (see the package doc). On
// failure everything built so far is quiesced and the error returned.
func Boot(ctx context.Context, name string, opts ...Option) (*PC, error) {
	cfg := config{ports: 4}
	for _, o := range opts {
		o(&cfg)
	}
	var mopts []sim.Option
	if cfg.tracking {
		mopts = append(mopts, sim.WithTracking())
	}
	p := &PC{m: sim.New(name, mopts...)}
	if err := p.boot(ctx, cfg); err != nil {
		qctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, qerr := p.m.Quiesce(qctx)
		return nil, errors.Join(fmt.Errorf("pc: boot %s: %w", name, err), qerr)
	}
	return p, nil
}

func (p *PC) boot(ctx context.Context, cfg config) error {
	m := p.m
	mods := map[string]*sever.Owner{}
	for _, mod := range []struct {
		name string
		deps []string
	}{
		{"cp2112", nil}, {"at24", nil}, {"lm75", nil}, {"gpio_keys", nil},
		{"scsi_mod", nil}, {"sd_mod", []string{"scsi_mod"}}, {"libata", []string{"scsi_mod"}}, {"ahci", []string{"libata"}},
	} {
		o, err := m.Insmod(mod.name, nil, mod.deps...)
		if err != nil {
			return err
		}
		mods[mod.name] = o
	}

	// Seed 000: the CP2112 in port 1 and gpio-keys on one of its lines.
	if _, err := cp2112.Register(ctx, m, mods["cp2112"], 0); err != nil {
		return err
	}
	if err := cp2112.RegisterClientDrivers(ctx, m, mods["at24"], mods["lm75"]); err != nil {
		return err
	}
	if _, err := gpiokeys.Register(ctx, m, mods["gpio_keys"]); err != nil {
		return err
	}
	var err error
	if p.host, err = usb.NewHost(ctx, m.Core(), "usb1", cfg.ports); err != nil {
		return err
	}
	if err := p.addPorts(cfg.ports); err != nil {
		return err
	}
	label := "cp2112-1" // the serial of the board in port 1
	if cfg.hostCmd != nil {
		if err := p.startHosts(ctx, cfg.hostCmd); err != nil {
			return err
		}
	} else if err := p.Connect(ctx, 1, "cp2112"); err != nil {
		return err
	}
	if p.keys, err = gpiokeys.AddDevice(ctx, m, gpiokeys.Config{
		Name: "gpio-keys.0", Chip: label, Line: KeyLine,
		RequestIRQ: func(name string, h irq.Handler) (gpiokeys.IRQ, error) {
			return cp2112.RequestIRQ(m.Core(), label, KeyLine, name, h)
		},
	}); err != nil {
		return err
	}

	// Seed 004: an AHCI controller with one disk.
	ml, err := scsi.NewMidlayer(m, mods["scsi_mod"], 0)
	if err != nil {
		return err
	}
	if p.sd, err = scsi.RegisterSD(ctx, m, mods["sd_mod"], ml); err != nil {
		return err
	}
	if err := scsi.RegisterAHCI(ctx, m, mods["ahci"], scsi.NewLibata(m, mods["libata"], ml)); err != nil {
		return err
	}
	if _, err := scsi.AddController(ctx, m, "ahci.0", scsi.NewDiskHardware(DiskSectors)); err != nil {
		return err
	}

	// Seed 001: zram, one disk.
	if p.zram, err = zram.Load(ctx, m, zram.Config{Devices: 1}); err != nil {
		return err
	}

	// Seed 002: a cgroup with a pressure file.
	h, err := psi.Mount(m, 0)
	if err != nil {
		return err
	}
	if p.cg, err = h.Mkdir("sever"); err != nil {
		return err
	}

	// Seed 003: a tcmu device and its uio char device.
	t, err := tcmu.Load(ctx, m, 0)
	if err != nil {
		return err
	}
	if p.tcmu, err = t.Create(ctx, "tcmu0"); err != nil {
		return err
	}
	dev := p.tcmu
	m.OnQuiesce("configfs rmdir tcmu0", func(ctx context.Context) error { return t.Destroy(ctx, dev) })
	return nil
}

// Machine returns the simulated machine.
func (p *PC) Machine() *sim.Machine { return p.m }

// Ports returns the number of USB ports.
func (p *PC) Ports() int { return len(p.ports) }

// Keys returns the gpio-keys.0 device.
func (p *PC) Keys() *device.Device { return p.keys }

// Board returns the hardware of the board in port n (from 1), or nil if
// the port is empty or n is not a port.
func (p *PC) Board(n int) *cp2112.Hardware {
	pt := p.port(n)
	if pt == nil {
		return nil
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.hw
}

// Quiesce ends the machine's life: see sim.Machine.Quiesce. The port
// controls go first, waiting for connects and disconnects in flight, then
// every board is unplugged.
func (p *PC) Quiesce(ctx context.Context) ([]check.Violation, error) {
	return p.m.Quiesce(ctx)
}

func (p *PC) port(n int) *port {
	if n < 1 || n > len(p.ports) {
		return nil
	}
	return p.ports[n-1]
}

// errPort names port n in an error.
func (p *PC) errPort(n int, err error) error {
	return &sever.ObjectError{Object: fmt.Sprintf("usb1 port %d", n), Err: err}
}

// Connect plugs a new board of kind (one of Devices) into port n, as
// writing kind to the port's connect file does. It fails with an error
// wrapping sever.ErrInvalid for an unknown kind or port and sever.ErrBusy
// for an occupied port. The board is enumerated and, if its driver is
// loaded, bound before Connect returns; a board whose driver is not
// loaded stays in the port unbound, and Connect succeeds.
func (p *PC) Connect(ctx context.Context, n int, kind string) error {
	pt := p.port(n)
	if pt == nil {
		return p.errPort(n, fmt.Errorf("no such port: %w", sever.ErrInvalid))
	}
	if !slices.Contains(Devices(), kind) {
		return p.errPort(n, fmt.Errorf("unknown device %q (known: %v): %w", kind, Devices(), sever.ErrInvalid))
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.kind != "" || pt.usb.Device() != nil {
		return p.errPort(n, fmt.Errorf("occupied by %s: %w", pt.kind, sever.ErrBusy))
	}
	// One serial per port: a board plugged again into the same port is
	// the same GPIO chip label, so a consumer described by it (gpio-keys)
	// can be bound again.
	hw := cp2112.NewHardware(fmt.Sprintf("cp2112-%d", n))
	if _, err := cp2112.Plug(ctx, p.m, pt.usb, hw); err != nil {
		return err
	}
	pt.kind, pt.hw = kind, hw
	pt.addSim()
	return nil
}

// Disconnect unplugs the board in port n, as writing 1 to the port's
// disconnect file does: a surprise removal (usb.Port.Unplug) that returns
// when no callback of the board's drivers runs or will run; the board's
// sim/ controls go after it. It fails with an error wrapping
// sever.ErrNoDevice for an empty port and sever.ErrInvalid for an unknown
// one.
func (p *PC) Disconnect(ctx context.Context, n int) error {
	pt := p.port(n)
	if pt == nil {
		return p.errPort(n, fmt.Errorf("no such port: %w", sever.ErrInvalid))
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.disconnectLocked(ctx)
}

func (pt *port) disconnectLocked(ctx context.Context) error {
	if pt.kind == "" && pt.usb.Device() == nil {
		return pt.pc.errPort(pt.n, fmt.Errorf("empty: %w", sever.ErrNoDevice))
	}
	pt.pc.m.Record(sim.KindStep, "usb", fmt.Sprintf("disconnect port %d", pt.n))
	err := pt.usb.Unplug(ctx)
	if pt.sim != nil {
		err = errors.Join(err, pt.pc.m.Sysfs().Remove(ctx, pt.sim))
		pt.sim = nil
	}
	pt.kind, pt.hw = "", nil
	return err
}

// addPorts makes /bus/usb/ports/<n> for every port, and registers their
// teardown at the machine's quiesce.
func (p *PC) addPorts(n int) error {
	t := p.m.Sysfs()
	busUSB, err := t.Lookup("/bus/usb")
	if err != nil {
		return err
	}
	ports, err := t.AddDir(busUSB, kernfs.Dir{Name: "ports", Hidden: true})
	if err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		pt := &port{pc: p, n: i, usb: p.host.Port(i)}
		if pt.dir, err = t.AddDir(ports, kernfs.Dir{Name: fmt.Sprint(i)}); err != nil {
			return err
		}
		if _, err := t.AddAttr(pt.dir, kernfs.Attr{Name: "connect", Parse: kernfs.String(64), Store: pt.storeConnect}); err != nil {
			return err
		}
		if _, err := t.AddAttr(pt.dir, kernfs.Attr{Name: "disconnect", Parse: kernfs.Int(1, 1), Store: pt.storeDisconnect}); err != nil {
			return err
		}
		if _, err := t.AddAttr(pt.dir, kernfs.Attr{Name: "device", Show: pt.showDevice}); err != nil {
			return err
		}
		p.ports = append(p.ports, pt)
	}
	if err := t.Activate(ports); err != nil {
		return err
	}
	p.m.OnQuiesce("usb ports", func(ctx context.Context) error {
		// The controls first, draining connects and disconnects in
		// flight, so nothing plugs behind the unplugs.
		err := t.Remove(ctx, ports)
		for _, pt := range p.ports {
			pt.mu.Lock()
			if pt.kind != "" || pt.usb.Device() != nil {
				err = errors.Join(err, pt.disconnectLocked(ctx))
			}
			pt.mu.Unlock()
		}
		return err
	})
	return nil
}

// removalContext is the context of a removal run from a control's Store:
// not the writer's, which a signal cancels — an unplug given up half-way
// is a violation, not an interruption — but bounded by unplugTimeout.
func removalContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), unplugTimeout)
}

func (pt *port) storeConnect(c *kernfs.Call, v any) error {
	ctx, cancel := removalContext()
	defer cancel()
	return pt.pc.Connect(ctx, pt.n, v.(string))
}

func (pt *port) storeDisconnect(c *kernfs.Call, v any) error {
	ctx, cancel := removalContext()
	defer cancel()
	return pt.pc.Disconnect(ctx, pt.n)
}

func (pt *port) showDevice(c *kernfs.Call, buf []byte) ([]byte, error) {
	pt.mu.Lock()
	kind := pt.kind
	pt.mu.Unlock()
	if kind == "" {
		kind = "none"
	}
	return append(append(buf, kind...), '\n'), nil
}

// addSim makes <port>/sim, the board's side of the wire. Called with
// pt.mu held, after the board is plugged.
func (pt *port) addSim() {
	t := pt.pc.m.Sysfs()
	hw := pt.hw
	dir, err := t.AddDir(pt.dir, kernfs.Dir{Name: "sim", Hidden: true})
	if err != nil {
		return
	}
	var errs []error
	for line := range cp2112.Lines {
		_, err := t.AddAttr(dir, kernfs.Attr{
			Name:  fmt.Sprintf("line%d", line),
			Parse: kernfs.Int(0, 1),
			Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) {
				if hw.Input(line) {
					return append(buf, "1\n"...), nil
				}
				return append(buf, "0\n"...), nil
			},
			Store: func(_ *kernfs.Call, v any) error {
				hw.SetInput(line, v.(int64) == 1)
				return nil
			},
		})
		errs = append(errs, err)
	}
	_, err = t.AddAttr(dir, kernfs.Attr{
		Name:  "temp",
		Parse: kernfs.Int(-55000, 125000),
		Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) {
			return fmt.Appendf(buf, "%d\n", hw.Temperature()), nil
		},
		Store: func(_ *kernfs.Call, v any) error {
			hw.SetTemperature(int(v.(int64)))
			return nil
		},
	})
	if err = errors.Join(append(errs, err)...); err == nil {
		err = t.Activate(dir)
	}
	if err != nil {
		// The board works without its sim/ controls (the port's
		// directory may be going); the trace says why they are missing.
		pt.pc.m.Record(sim.KindStep, dir.Path(), "sim controls: "+errors.Join(err, t.Remove(context.Background(), dir)).Error())
		return
	}
	pt.sim = dir
}
