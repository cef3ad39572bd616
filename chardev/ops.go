package chardev

import (
	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
)

// Config describes a char device to Register.
type Config struct {
	// Name is the file's name under dev/ ("uio0", "ttyUSB0"), unique on
	// the machine while registered. It must not contain '/'.
	Name string
	// Major is the device number's major. 0: the registry allocates a
	// dynamic major for this device alone, minor 0. Otherwise the device
	// gets the lowest free minor of Major (one from Registry.AllocMajor,
	// shared by a subsystem's devices, or a fixed number).
	Major uint32
	// Gone is the error operations return once the device is unregistered.
	// nil means sever.ErrNoDevice (ENODEV), what most devices return;
	// uio-like devices choose sever.ErrIO (EIO), as uio does. It should
	// wrap a syscall.Errno so processes see it; errors name the device.
	Gone error
	// Owner is the module whose code Ops are. Every open pins it until its
	// Release has run, and unloading it unregisters the char device first.
	// nil means the owner of dev's code at Register (device.Device.Owner),
	// which may be nil: built-in code that cannot go.
	Owner *sever.Owner
	// Regions are the memory the device lets processes map, by index (see
	// File.Mmap). Register takes them over on success: from then on the
	// char device severs them when it is unregistered and every open holds
	// them, so the framework frees each region's memory once the device is
	// unregistered and its last mapping and open are gone. If Register fails the caller
	// still owns them.
	Regions []*sever.Region
	Ops     Ops
}

// Ops are a char device's driver callbacks. Any may be nil; what a nil
// callback means is said at its field.
//
// What holds for every callback but Release: it is called on the goroutine
// of the File method that needs it, any number of times, concurrently —
// also for one File — and only while the char device is live: it runs
// inside the device's active reference with the open's pin on Owner held,
// so nothing of the driver is gone yet, and Unregister (and with it the
// driver's Remove) waits for it to return. It may touch the driver's state
// and its open's Call.Private without a lock against Remove. It may block
// only briefly (Unregister waits for it): it must never wait for an event —
// it returns sever.ErrWouldBlock and the framework waits, outside the
// device, until the driver calls Cdev.Notify. It must not unregister its
// own char device or device: that would wait for it, so it fails instead,
// after a short grace, with an error wrapping sever.ErrDeadlock (see
// Cdev.Unregister and device.Device.Unregister); unregister from another
// goroutine. A panic is
// recovered, recorded as check.DriverFault, and the operation returns an
// error wrapping sever.ErrIO.
type Ops struct {
	Open OpenFunc
	// Read nil: reads fail with an error wrapping syscall.EINVAL.
	Read ReadFunc
	// Write nil: writes fail with an error wrapping syscall.EINVAL.
	Write WriteFunc
	// Ioctl nil: every command fails with an error wrapping sever.ErrNotTTY (ENOTTY).
	Ioctl IoctlFunc
	// Poll nil: the device is always readable and writable
	// (EventIn|EventOut), as Linux's DEFAULT_POLLMASK.
	Poll PollFunc
	// Mmap nil: any of Config.Regions may be mapped.
	Mmap    MmapFunc
	Release ReleaseFunc
}

// OpenFunc attaches per-open state to a file being opened; what it returns
// is the open's Call.Private, handed to every later callback for that open
// and to Release.
//
// When: once per Cdev.Open, before the File exists for anyone. On which
// goroutine: the opener's. What may be gone: nothing — it runs inside the
// device's active reference with the open's owner pin taken. What it may
// touch: the driver's state. May it block: briefly, as every callback. If
// it returns an error (or panics) Open fails with it, the pin is dropped
// and Release is never called for this open.
type OpenFunc func(c *Call) (private any, err error)

// ReadFunc reads from the device into buf and returns how many bytes it
// filled. Char devices have no file offset here: each read is a request to
// the driver. Returning sever.ErrWouldBlock (or an error wrapping EAGAIN)
// with 0 bytes means "nothing yet": a blocking File waits until the driver
// calls Cdev.Notify and reads again; a non-blocking one returns the error.
// See Ops for when it is called, on which goroutine, what may be gone,
// what it may touch and whether it may block.
type ReadFunc func(c *Call, buf []byte) (int, error)

// WriteFunc writes data to the device and returns how many bytes it took;
// sever.ErrWouldBlock with 0 bytes means "no room yet", as for ReadFunc.
// data is valid only until it returns. See Ops for the rest of the
// contract.
type WriteFunc func(c *Call, data []byte) (int, error)

// IoctlFunc carries out command cmd. arg is a framework buffer of
// cmd.Size() bytes: for a command that writes (IOW, IOWR) it holds the
// caller's argument; for one that reads (IOR, IOWR) what the driver leaves
// in it is copied back to the caller if it returns a nil error. arg is
// valid only until it returns. The int is the ioctl's return value. An
// unknown command should return an error wrapping sever.ErrNotTTY. See Ops
// for the rest of the contract.
type IoctlFunc func(c *Call, cmd Cmd, arg []byte) (int, error)

// PollFunc reports the open's readiness now (sever.EventIn, EventOut, ...)
// without blocking: poll_wait is the framework's business. Pollers sleep
// on the open's own framework-owned wait queue and poll again whenever the
// driver calls Cdev.Notify, so the driver must Notify after every change
// that can make PollFunc's answer grow. See Ops for the rest of the
// contract.
type PollFunc func(c *Call) sever.Events

// MmapFunc decides whether this open may map Config.Regions[index] (it may
// prepare per-open state, as tcmu's mmap does, or refuse with an error).
// The framework checks index before calling and makes the mapping after;
// the mapping then stays valid, and the region allocated, without the
// driver, until the user unmaps it. See Ops for the rest of the contract.
type MmapFunc func(c *Call, index int) error

// ReleaseFunc ends one open: it frees what OpenFunc attached.
//
// When: exactly once per successful Open — by Close, on the closing
// goroutine, after every operation in flight on that File has returned; or,
// if the file is still open when the char device is unregistered, by the
// unregistration, on its goroutine, after every operation in flight on the
// device has returned. Never after Unregister returns, and a Close after
// Unregister does not call it. What may be gone: nothing of the driver —
// its Remove has not run — but the device may be mid-removal, and no other
// callback of this open runs during or after it. What it may touch: the
// driver's state and c.Private. May it block: briefly; Unregister waits for
// it. The open's pin on the owner is dropped right after it returns: from
// then on the driver's code may be unloaded. A panic is recovered and
// recorded as check.DriverFault; the release counts as run.
type ReleaseFunc func(c *Call)

// Call is what a callback gets besides its arguments: the open it runs for.
// It stays the same for every callback of one open and may be used
// concurrently, but only from inside a callback.
type Call struct {
	f *File
}

// Private returns what Ops.Open returned for this open, or nil.
func (c *Call) Private() any { return c.f.private }

// Cdev returns the char device the open is on.
func (c *Call) Cdev() *Cdev { return c.f.c }

// Device returns the device the char device was registered on; its
// driver's data is device.DriverDataOf[T](c.Device()). The device is bound
// for as long as a callback runs: unbinding severs the char device first.
func (c *Call) Device() *device.Device { return c.f.c.dev }

// Nonblocking reports whether the file was opened with O_NONBLOCK.
func (c *Call) Nonblocking() bool { return c.f.nonblock }
