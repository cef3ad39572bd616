package chardev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

// Cdev is a registered char device: a name under dev/, a number, the
// driver's Ops, the Regions it maps, and the files open on it.
//
//	live ──Unregister──▶ severing ──in-flight calls drained──▶ severed
//
// live: Open succeeds and every File operation calls into Ops. severing:
// the name has left dev/ and its number is free; no new operation or open
// enters the device, the ones in flight finish. severed: the driver's
// Release has run for every file that was still open, their pollers have
// woken with EventErr|EventHup, the regions are severed (each freed when
// its last mapping and open go), and nothing calls into Ops ever again.
// Open files stay as shells; their operations return the chosen Gone
// error until they are closed.
//
// The protocol — calls into Ops, open files, the sweep at unregister — is
// the device's sever.Scope; chardev adds the device number, the name under
// dev/ and the ioctl and blocking rules.
//
// Cost of an operation on a File: a read lock of the File, one Enter and
// Exit of the device's scope (an atomic add each, on the caller's CPU
// shard), a load of the owner's state and a deferred recover. Nothing is
// allocated.
type Cdev struct {
	reg     *Registry
	dev     *device.Device
	name    string // under dev/
	obj     string // "chardev: /dev/<name>", in errors
	owner   *sever.Owner
	ops     Ops
	regions []*sever.Region
	log     *check.Log
	opts    []sever.Option
	s       *sever.Scope // the protocol: calls into Ops, open files, regions
	gone    error        // what operations return once severing has begun
	closed  error        // what operations return after Close
	sites   [siteCount]string

	// Set by the registry under its lock.
	devt        Devt
	ownMajor    bool
	unpublished bool

	// Set by Register, read by Unregister, which may run as soon as the
	// hook or the severable is in place (an unplug during the driver's
	// Probe): guarded by mu.
	unsever func() // takes the severable off the device's removal path
	unhook  func() // takes the unload hook off the owner
	mu      sync.Mutex

	begin sync.Once
}

// Register creates the char device cfg describes on dev, with the next
// number (see Config.Major), and joins it to dev's removal path: it is
// severed with dev's files (device.StageFiles) when the binding it was
// registered in ends — registered from Probe, at unbind — or when dev is
// unregistered. A driver that removes it earlier calls Cdev.Unregister.
//
// Register fails with an error wrapping sever.ErrInvalid for a bad name,
// sever.ErrExist if the name is taken on dev's machine, and
// sever.ErrNoDevice if dev is being removed or unbound or the owner is not
// live.
func Register(dev *device.Device, cfg Config) (*Cdev, error) {
	if cfg.Name == "" || strings.ContainsRune(cfg.Name, '/') || cfg.Name == "." || cfg.Name == ".." {
		return nil, &sever.ObjectError{Object: "chardev: /dev/" + cfg.Name, Err: fmt.Errorf("bad name: %w", sever.ErrInvalid)}
	}
	core := dev.Core()
	obj := "chardev: /dev/" + cfg.Name
	gone := cfg.Gone
	if gone == nil {
		gone = sever.ErrNoDevice
	}
	c := &Cdev{
		reg:     RegistryOf(core),
		dev:     dev,
		name:    cfg.Name,
		obj:     obj,
		owner:   cfg.Owner,
		ops:     cfg.Ops,
		regions: slices.Clone(cfg.Regions),
		log:     core.Log(),
		opts:    core.Options(),
		closed:  &sever.ObjectError{Object: obj, Err: sever.ErrClosed},
	}
	if c.owner == nil {
		c.owner = dev.Owner()
	}
	c.s = sever.NewScopeGone(obj, c.owner, gone, c.opts...)
	c.gone = c.s.Gone()
	for _, r := range c.regions {
		_ = c.s.AddRegion(r) // a fresh scope is live: this cannot fail
	}
	for i, s := range siteNames {
		c.sites[i] = obj + ": " + s
	}
	if o := c.owner; o != nil {
		unhook, err := o.OnUnload(obj, c.Unregister)
		if err != nil {
			return nil, &sever.ObjectError{Object: obj, Err: fmt.Errorf("owner %s is %v: %w", o.Name(), o.State(), sever.ErrNoDevice)}
		}
		c.mu.Lock()
		c.unhook = unhook
		c.mu.Unlock()
	}
	unsever, err := dev.AddSeverable(obj, device.StageFiles, c.Unregister)
	if err != nil {
		c.dropHooks()
		return nil, &sever.ObjectError{Object: obj, Err: err}
	}
	c.mu.Lock()
	c.unsever = unsever
	c.mu.Unlock()
	if err := c.reg.publish(c, cfg.Major); err != nil {
		c.dropHooks()
		return nil, err
	}
	return c, nil
}

func (c *Cdev) dropHooks() {
	c.mu.Lock()
	unhook, unsever := c.unhook, c.unsever
	c.mu.Unlock()
	if unhook != nil {
		unhook()
	}
	if unsever != nil {
		unsever()
	}
}

// Name returns the device's name under dev/ ("uio0").
func (c *Cdev) Name() string { return c.name }

// Path returns the device's path: "/dev/uio0".
func (c *Cdev) Path() string { return "/dev/" + c.name }

// String returns the device's path.
func (c *Cdev) String() string { return c.Path() }

// Devt returns the device's number. It stays the same after unregister,
// when the number may already belong to another device.
func (c *Cdev) Devt() Devt { return c.devt }

// Device returns the device the char device was registered on.
func (c *Cdev) Device() *device.Device { return c.dev }

// Owner returns the owner of the device's Ops, or nil.
func (c *Cdev) Owner() *sever.Owner { return c.owner }

// Regions returns the mappable regions, by index.
func (c *Cdev) Regions() []*sever.Region { return slices.Clone(c.regions) }

// Err returns nil while the device is live and the Gone error from the
// start of its unregistration.
func (c *Cdev) Err() error { return c.s.Err() }

// Severing returns a channel closed when the device's unregistration
// begins.
func (c *Cdev) Severing() <-chan struct{} { return c.s.Severing() }

// Unregistered returns a channel closed when the device is severed: no
// callback runs now or later and every open's Release has run.
func (c *Cdev) Unregistered() <-chan struct{} { return c.s.Severed() }

// Opens returns the number of files open on the device whose Release has
// not run, for reports and tests.
func (c *Cdev) Opens() int { return c.s.Shells() }

// Open opens the device. flag carries the access mode (os.O_RDONLY,
// os.O_WRONLY or os.O_RDWR), which Read and Write check, and
// syscall.O_NONBLOCK, which makes Read and Write return an error wrapping
// EAGAIN instead of waiting. Open calls Ops.Open, if any.
//
// A successful Open pins the owner until the open's Release has run,
// holds each of the device's regions until the File's last reference is
// gone, and, with a log, registers the Release as a check.Pending. Open
// fails with the Gone error once unregistration has begun (or the owner is
// unloading), and with Ops.Open's error.
func (c *Cdev) Open(flag int) (*File, error) {
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	f := &File{
		c:        c,
		canRead:  acc == os.O_RDONLY || acc == os.O_RDWR,
		canWrite: acc == os.O_WRONLY || acc == os.O_RDWR,
		nonblock: flag&syscall.O_NONBLOCK != 0,
	}
	f.call.f = f
	var open func() error
	if o := c.ops.Open; o != nil {
		open = func() error {
			priv, err := o(&f.call)
			f.private = priv
			return err
		}
	}
	var release func()
	if rel := c.ops.Release; rel != nil {
		release = func() { rel(&f.call) }
	}
	sh, err := c.s.Open(open, release)
	if err != nil {
		return nil, c.wrap(err)
	}
	f.sh = sh
	return f, nil
}

// Notify tells the device's pollers and waiting readers and writers that
// its readiness may have changed: each open's Wait polls again, and each
// blocked Read or Write retries. ev is recorded in the opens' wait queues
// (see sever.WaitQueue). The driver calls it after the change, from
// anywhere, including a callback; it calls no driver code and does nothing
// once the device is severed.
func (c *Cdev) Notify(ev sever.Events) { c.s.Notify(ev) }

// Unregister removes the char device, in this order:
//
//  1. unpublish: the name leaves dev/ and the number is freed (a device
//     plugged in again may take both), and no new operation or open enters;
//  2. drain: wait for the operations in flight — only those, never for
//     files to be closed, and never for a waiting Read, which waits
//     outside the device;
//  3. release: run Release once for every file still open (files closed
//     before took their own) and drop its owner pin; wake its pollers and
//     waiting readers with EventErr|EventHup;
//  4. regions: sever each region; the framework frees its memory now if
//     nothing maps or holds it, else at the last Unmap or file free.
//
// When it returns nil, no callback into Ops is running or will ever run.
// The device's removal path calls it (device.StageFiles); a driver may call
// it earlier. It is idempotent: concurrent and later calls wait for the
// same drain and return when the device is severed. If ctx ends while
// operations are in flight it returns the drain's *sever.HoldersError
// (recording check.SeverTimeout) and the device stays severing; a later
// call finishes. Calling it from inside one of the device's own callbacks
// would wait for that callback: after a short grace it returns an error
// wrapping sever.ErrDeadlock naming the device (recording check.Misuse),
// the device stays severing, and a call from another goroutine once the
// callback has returned finishes it.
func (c *Cdev) Unregister(ctx context.Context) error {
	c.begin.Do(c.unpublish)                // 1
	if err := c.s.Sever(ctx); err != nil { // 2, 3, 4: the scope's Sever
		return err
	}
	c.dropHooks()
	return nil
}

// unpublish is step 1 of Unregister.
func (c *Cdev) unpublish() { c.reg.unpublish(c) }

// Sites of driver callbacks, for Owner.Call reports and DriverFaults.
const (
	siteRead = iota
	siteWrite
	siteIoctl
	sitePoll
	siteMmap
	siteCount
)

var siteNames = [siteCount]string{"Read", "Write", "Ioctl", "Poll", "Mmap"}

// wrap names the device in a driver's error, unless it already names an
// object.
func (c *Cdev) wrap(err error) error {
	if err == nil {
		return nil // before the errors.As, whose target would escape on this path too
	}
	return c.wrapErr(err)
}

func (c *Cdev) wrapErr(err error) error {
	var oe *sever.ObjectError
	if errors.As(err, &oe) {
		return err
	}
	return &sever.ObjectError{Object: c.obj, Err: err}
}

func (c *Cdev) errNoDevice() error { return &sever.ObjectError{Object: c.obj, Err: sever.ErrNoDevice} }
