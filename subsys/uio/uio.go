// Package uio is a user-space I/O subsystem modelled on Linux's uio: a
// driver exposes a device's memory regions and its interrupts to a process
// through a char device, /dev/uioN, and the process does the rest (tcmu and
// tcmu-runner: DESIGN.md, "Seed 003").
//
// The process's side, as with uio:
//
//	f, _ := chardev.RegistryOf(core).Open("uio0", os.O_RDWR)
//	m, _ := f.Mmap(0)                     // the device's memory, region 0
//	n, err := f.ReadContext(ctx, buf[:4]) // blocks until an interrupt; buf = count, little-endian
//	f.Write([]byte{1, 0, 0, 0})           // re-enable the interrupt (irqcontrol)
//
// When the driver unregisters the device — its parent unplugged, its driver
// unbound — a blocked Read wakes, and every later operation fails, with
// EIO, as uio's do; pollers wake with EventErr|EventHup. Each open's
// Info.Release runs exactly once, at close or at unregister, never after.
// Mappings stay valid: the regions are the framework's (sever.Region), and
// the framework frees each region's memory when the device is unregistered
// and its last mapping and open are gone. That is what tcmu wanted uio's
// late_release for, without any callback into a driver whose device is
// gone: the driver's module can unload while a process still maps the
// memory.
package uio

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// Info describes a uio device to Register (struct uio_info).
type Info struct {
	Name    string // the driver's name for it, shown in the "name" attribute
	Version string // shown in the "version" attribute
	// Owner is the module whose code the callbacks are; nil means the
	// owner of the parent's driver. Every open pins it until its Release.
	Owner *sever.Owner
	// Regions are the device's mappable memory, mapping index i to
	// Regions[i] (uio's maps/mapN). Register takes them over on success
	// (see chardev.Config.Regions).
	Regions    []*sever.Region
	IrqControl IrqControlFunc
	Open       OpenFunc
	Release    ReleaseFunc
}

// IrqControlFunc switches the device's interrupt on or off in hardware,
// when the process writes a 4-byte value to the device (uio's irqcontrol):
// nonzero means on. If it returns an error the write fails with it and the
// line's state is unchanged. When: once per such write, on the writing
// goroutine, any number of times, concurrently with other callbacks. What
// may be gone: nothing — it runs inside the char device's active reference
// with the owner pinned; unregistering waits for it and never calls it
// after. What it may touch: the driver's state. May it block: briefly, on
// its hardware; never waiting for an event. nil: the write just masks or
// unmasks the line in the subsystem (see Device.Interrupt).
type IrqControlFunc func(on bool) error

// OpenFunc is called when a process opens the device, on the opening
// goroutine, once per open, inside the char device's active reference
// with the owner pinned (nothing is gone). It may touch the driver's state
// and block briefly. If it returns an error the open fails and Release is
// not called for it.
type OpenFunc func() error

// ReleaseFunc ends one open: exactly once per successful open, at Close
// (on the closing goroutine) or, if the file is still open at unregister,
// by the unregistration (on its goroutine, after the operations in flight
// have drained) — never after Unregister returns, never at a Close after
// unregister. Nothing of the driver is gone when it runs; its owner pin is
// dropped when it returns. It may touch the driver's state, and block
// briefly. It must not free memory that may still be mapped: that memory
// is a Region's, and the framework frees it.
type ReleaseFunc func()

// Device is a registered uio device: a child device "uioN" of class "uio"
// under the driver's device, with its char device /dev/uioN.
//
//	live ──Unregister (or the parent's removal)──▶ gone
//
// In gone, Interrupt does nothing and the char device's files are shells
// returning EIO.
type Device struct {
	dev    *device.Device
	cdev   *chardev.Cdev
	info   Info
	events atomic.Uint32 // interrupts delivered (uio's idev->event)
	masked atomic.Bool   // the line is off (irqcontrol wrote 0)
}

type machineKey struct{}

// machine is the subsystem's per-machine state: the class, the major and
// the index allocator.
type machine struct {
	class *device.Class
	major uint32
	err   error

	mu   sync.Mutex
	used map[int]bool
}

func machineOf(c *device.Core) *machine {
	return device.Local(c, machineKey{}, func() *machine {
		m := &machine{used: make(map[int]bool)}
		if m.class, m.err = c.NewClass("uio", nil); m.err == nil {
			m.major, m.err = chardev.RegistryOf(c).AllocMajor("uio")
		}
		return m
	})
}

// Register creates uio device under parent (uio_register_device): the
// child device uioN of class uio, with attributes name, version and event,
// and its char device /dev/uioN whose operations fail with EIO once it is
// unregistered. Called from parent's Probe it belongs to that binding and
// is unregistered when the binding ends, before the driver's Remove.
func Register(ctx context.Context, parent *device.Device, info Info) (*Device, error) {
	core := parent.Core()
	m := machineOf(core)
	if m.err != nil {
		return nil, m.err
	}
	m.mu.Lock()
	idx := 0
	for m.used[idx] {
		idx++
	}
	m.used[idx] = true
	m.mu.Unlock()
	free := func() {
		m.mu.Lock()
		delete(m.used, idx)
		m.mu.Unlock()
	}
	name := "uio" + strconv.Itoa(idx)

	u := &Device{info: info}
	dev, err := core.Register(ctx, device.Config{
		Name:   name,
		Parent: parent,
		Class:  m.class,
		Groups: []device.AttrGroup{{Attrs: []device.Attr{
			{Name: "name", Show: func(_ *kernfs.Call, _ *device.Device, b []byte) ([]byte, error) {
				return append(append(b, info.Name...), '\n'), nil
			}},
			{Name: "version", Show: func(_ *kernfs.Call, _ *device.Device, b []byte) ([]byte, error) {
				return append(append(b, info.Version...), '\n'), nil
			}},
			{Name: "event", Show: func(_ *kernfs.Call, _ *device.Device, b []byte) ([]byte, error) {
				return append(strconv.AppendUint(b, uint64(u.events.Load()), 10), '\n'), nil
			}},
		}}},
	})
	if err != nil {
		free()
		return nil, err
	}
	u.dev = dev
	if _, err := dev.AddResource("uio index", free); err != nil {
		free()
		_ = dev.Unregister(ctx) // the error that matters is err
		return nil, err
	}
	owner := info.Owner
	if owner == nil {
		owner = parent.Owner()
	}
	u.cdev, err = chardev.Register(dev, chardev.Config{
		Name:    name,
		Major:   m.major,
		Gone:    sever.ErrIO,
		Owner:   owner,
		Regions: info.Regions,
		Ops: chardev.Ops{
			Open:    u.open,
			Read:    u.read,
			Write:   u.write,
			Poll:    u.poll,
			Release: u.release,
		},
	})
	if err != nil {
		_ = dev.Unregister(ctx) // the error that matters is err
		return nil, err
	}
	return u, nil
}

// Name returns the device's name, "uioN".
func (u *Device) Name() string { return u.dev.Name() }

// Device returns the uio child device.
func (u *Device) Device() *device.Device { return u.dev }

// Cdev returns the char device /dev/uioN.
func (u *Device) Cdev() *chardev.Cdev { return u.cdev }

// Open opens /dev/uioN with flag (see chardev.Cdev.Open).
func (u *Device) Open(flag int) (*chardev.File, error) { return u.cdev.Open(flag) }

// Events returns the number of interrupts delivered so far.
func (u *Device) Events() uint32 { return u.events.Load() }

// Interrupt signals one interrupt (uio_event_notify): the count goes up,
// readers blocked in Read wake with it and pollers see EventIn. It is the
// driver's interrupt handler's call, safe from any goroutine. It reports
// whether the interrupt was delivered: not while the line is masked (the
// process wrote 0), and not once the device is unregistered.
func (u *Device) Interrupt() bool {
	if u.masked.Load() || u.cdev.Err() != nil {
		return false
	}
	u.events.Add(1)
	u.cdev.Notify(sever.EventIn)
	return true
}

// Unregister removes the device (uio_unregister_device): it unregisters
// the uioN device, which severs /dev/uioN (see chardev.Cdev.Unregister).
// When it returns no callback of Info runs now or later; blocked readers
// have woken with EIO.
func (u *Device) Unregister(ctx context.Context) error { return u.dev.Unregister(ctx) }

// listener is one open's state: the count it last read.
type listener struct{ seen atomic.Uint32 }

func (u *Device) open(c *chardev.Call) (any, error) {
	if u.info.Open != nil {
		if err := u.info.Open(); err != nil {
			return nil, err
		}
	}
	l := &listener{}
	l.seen.Store(u.events.Load())
	return l, nil
}

func (u *Device) release(c *chardev.Call) {
	if u.info.Release != nil {
		u.info.Release()
	}
}

// read is uio_read: 4 bytes, the interrupt count, once it has moved since
// this open last read.
func (u *Device) read(c *chardev.Call, p []byte) (int, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("read of %d bytes, want 4: %w", len(p), syscall.EINVAL)
	}
	l := c.Private().(*listener)
	n := u.events.Load()
	if n == l.seen.Load() {
		return 0, sever.ErrWouldBlock
	}
	binary.LittleEndian.PutUint32(p, n)
	l.seen.Store(n)
	return 4, nil
}

// poll is uio_poll: readable once an interrupt arrived since the last read.
func (u *Device) poll(c *chardev.Call) sever.Events {
	if u.events.Load() != c.Private().(*listener).seen.Load() {
		return sever.EventIn
	}
	return 0
}

// write is uio_write: 4 bytes, little-endian; nonzero turns the interrupt
// on, zero off.
func (u *Device) write(c *chardev.Call, p []byte) (int, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("write of %d bytes, want 4: %w", len(p), syscall.EINVAL)
	}
	on := binary.LittleEndian.Uint32(p) != 0
	if u.info.IrqControl != nil {
		if err := u.info.IrqControl(on); err != nil {
			return 0, err
		}
	}
	u.masked.Store(!on)
	return 4, nil
}
