// Package block is the block subsystem: a Disk is a request queue
// (package blockq) with a device of class "block" and a sysfs directory —
// size, stat, inflight, ro and queue/ — that a driver creates for the
// hardware it drives and deletes when the hardware goes.
//
// Deleting a disk is del_gendisk made safe (seed 004, §2-1: a request
// queue that drains and kills itself; DESIGN.md, "Seed 004"): its
// attribute files are severed (open ones become shells returning
// ENODEV), its queue is killed (queued requests fail with ENODEV, the ones
// with the driver finish), and when Del returns the driver is never called
// again for this disk. The deletion is part of the disk device's removal
// path, so unplugging or unbinding the device the disk was created for
// deletes it automatically, before the driver's Remove runs. A disk
// attribute may delete its own disk (zram's reset, DESIGN.md, "Seed 001")
// with DelSelf.
//
// Nothing is global: disks are named, and their names are unique, per
// simulated machine (device.Core).
package block

import (
	"context"
	"fmt"
	"io/fs"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// SectorSize is the unit of Request.Sector, of capacities and of the
// sector counts in stat: 512 bytes whatever the logical block size, as in
// Linux.
const SectorSize = 512

// ErrReadOnly is what a write or discard to a read-only disk fails with:
// sever.ErrReadOnly, which satisfies errors.Is(err, syscall.EROFS).
var ErrReadOnly = sever.ErrReadOnly

// DiskConfig describes a disk for AddDisk.
type DiskConfig struct {
	// Name is the disk's name, unique on its machine: "sda", "zram0".
	Name string
	// Sectors is the initial capacity in 512-byte sectors; see SetCapacity.
	Sectors int64
	// LogicalBlockSize is the smallest unit of I/O in bytes: a power of two
	// from 512 to 4096; 0 means 512. Requests must be aligned to it.
	LogicalBlockSize int
	// Driver performs the requests (see blockq.Driver for its contract).
	// Del kills the queue: after Del returns Driver is never called again.
	Driver blockq.Driver
	// Depth is the queue depth, shown as queue/nr_requests; 0 means
	// GOMAXPROCS (see blockq.New).
	Depth int
	// ReadOnly creates the disk read-only; see SetReadOnly.
	ReadOnly bool
	// Owner is the module whose code Driver and Attrs are; nil if it cannot
	// be unloaded. The disk pins it from AddDisk until it is deleted, so an
	// UnloadTry is refused while the disk exists; an UnloadForce deletes the
	// disk first.
	Owner *sever.Owner
	// Attrs are the driver's own attributes in the disk's directory
	// (zram's disksize and reset), created with the built-in ones, so the
	// directory appears whole.
	Attrs []Attr
}

// Attr is a driver attribute of a disk: a text file in the disk's
// directory whose callbacks receive the disk.
//
// Show and Store are called on the reading or writing goroutine, any
// number of times, concurrently with each other and with I/O, never after
// the disk's files are severed — the first step of Del — and Del waits for
// calls in flight before it kills the queue and returns. So they may touch
// the driver's state without a lock against deletion or the driver's
// Remove; they may run before AddDisk has returned (the directory is
// visible from inside AddDisk). They may block (Del waits longer). They
// may call any method of the disk except Del, which would wait for them
// for ever: a Store that deletes its own disk calls DelSelf with its
// kernfs.Call.
type Attr struct {
	Name  string
	Mode  fs.FileMode // permission bits; 0: derived from Show and Store, as in kernfs
	Show  func(c *kernfs.Call, d *Disk, buf []byte) ([]byte, error)
	Store func(c *kernfs.Call, d *Disk, v any) error
	Parse kernfs.Parser
}

// Disk is a block device: a request queue, a capacity, I/O statistics and
// a device of class "block" named after the disk, a child of the device
// the driver created it for. Its directory is reachable as
// <parent>/<name>, /class/block/<name> and /block/<name>.
//
// States, as in the code:
//
//	live ──Del or the device's removal──▶ dying ──files severed, queue killed──▶ deleted
//
// live: Submit passes requests to the driver. dying: Submit fails at once
// with an error wrapping sever.ErrNoDevice; attribute calls and requests
// in flight drain, queued requests fail with ErrNoDevice. deleted: no
// callback into the driver runs or will run; the Disk value stays valid as
// a shell whose methods report ErrNoDevice.
type Disk struct {
	name  string
	obj   string // "block: " + name, the object in errors
	gone  error  // what Submit returns once dying
	lbs   int64
	depth int
	owner *sever.Owner
	reg   *registry
	q     *blockq.Queue

	dev      atomic.Pointer[device.Device] // set by an attribute callback or AddDisk, whichever is first
	sizeNode atomic.Pointer[kernfs.Node]   // for Notify on SetCapacity
	link     *kernfs.Node                  // /block/<name>

	capacity atomic.Int64
	ro       atomic.Bool
	dying    atomic.Bool
	stats    stats

	releaseOnce sync.Once
	cancelHook  func() // guarded by reg.mu
	released    bool   // guarded by reg.mu
}

// AddDisk creates a disk for parent, the device the calling driver drives
// (add_disk): it starts the queue and registers the disk's device with its
// directory. Called from parent's Probe, the disk belongs to that binding
// and is deleted when it ends, before the driver's Remove; otherwise it is
// deleted when parent is unregistered. Either way it may be deleted
// earlier with Del.
//
// AddDisk fails with an error naming the disk and wrapping sever.ErrInvalid
// for a bad config, sever.ErrExist if the machine already has a disk of
// that name, and sever.ErrNoDevice if parent is being removed or Owner is
// unloading; nothing is left behind.
func AddDisk(ctx context.Context, parent *device.Device, cfg DiskConfig) (*Disk, error) {
	obj := "block: " + cfg.Name
	if err := cfg.check(parent); err != nil {
		return nil, &sever.ObjectError{Object: obj, Err: err}
	}
	lbs := int64(cfg.LogicalBlockSize)
	if lbs == 0 {
		lbs = SectorSize
	}
	depth := cfg.Depth
	if depth == 0 {
		depth = runtime.GOMAXPROCS(0)
	}
	c := parent.Core()
	r := registryOf(c)
	d := &Disk{
		name: cfg.Name, obj: obj, gone: &sever.ObjectError{Object: obj, Err: sever.ErrNoDevice},
		lbs: lbs, depth: depth, owner: cfg.Owner, reg: r,
	}
	d.capacity.Store(cfg.Sectors)
	d.ro.Store(cfg.ReadOnly)
	if err := r.reserve(d); err != nil {
		return nil, err
	}
	if o := d.owner; o != nil && !o.TryGet(d) {
		r.forget(d)
		return nil, &sever.ObjectError{Object: obj, Err: fmt.Errorf("owner %s is %v: %w", o.Name(), o.State(), sever.ErrNoDevice)}
	}
	var drv blockq.Driver = &accountingDriver{d: d, drv: cfg.Driver}
	if d.owner != nil {
		drv = blockq.OwnedBy(d.owner, drv) // every driver call pins the owner
	}
	d.q = blockq.New(cfg.Name, drv, depth, c.Options()...)

	dev, err := c.Register(ctx, device.Config{
		Name: cfg.Name, Parent: parent, Class: r.class, Owner: cfg.Owner,
		Groups: d.groups(cfg.Attrs),
	})
	if err != nil {
		_ = d.q.Kill(ctx) // nothing was submitted: it returns at once
		d.release()
		return nil, err
	}
	d.dev.Store(dev)
	if n, err := c.Sysfs().Lookup(dev.Dir().Path() + "/size"); err == nil {
		d.sizeNode.Store(n)
	}
	if err := d.join(ctx, dev); err != nil {
		// dev is being removed by someone else (a racing Unregister of
		// parent, or a DelSelf from an attribute): the removal path did
		// not take what we failed to join, so undo it here.
		d.dying.Store(true)
		_ = d.q.Kill(ctx) // the errors that matter are err and the remover's
		if d.link != nil {
			_ = c.Sysfs().Remove(ctx, d.link)
		}
		d.release()
		_ = dev.Unregister(ctx)
		return nil, err
	}
	return d, nil
}

func (cfg *DiskConfig) check(parent *device.Device) error {
	switch {
	case parent == nil:
		return fmt.Errorf("no parent device: %w", sever.ErrInvalid)
	case cfg.Name == "" || strings.ContainsRune(cfg.Name, '/'):
		return fmt.Errorf("bad disk name %q: %w", cfg.Name, sever.ErrInvalid)
	case cfg.Driver == nil:
		return fmt.Errorf("no driver: %w", sever.ErrInvalid)
	case cfg.Sectors < 0:
		return fmt.Errorf("negative capacity %d: %w", cfg.Sectors, sever.ErrInvalid)
	case cfg.Depth < 0:
		return fmt.Errorf("negative depth %d: %w", cfg.Depth, sever.ErrInvalid)
	case cfg.LogicalBlockSize != 0 && (cfg.LogicalBlockSize < SectorSize || cfg.LogicalBlockSize > 4096 ||
		cfg.LogicalBlockSize&(cfg.LogicalBlockSize-1) != 0):
		return fmt.Errorf("logical block size %d is not a power of two in [512, 4096]: %w", cfg.LogicalBlockSize, sever.ErrInvalid)
	}
	return nil
}

// join hooks the disk into dev's removal path and adds /block/<name>. The
// removal path of a disk device, del_gendisk's steps in order:
//
//  1. StageFiles, newest first: stop — Submit refuses new requests and
//     /block/<name> goes; then the device core removes the disk's
//     directory, draining attribute calls and severing open files;
//  2. StageProviders: kill the queue — queued requests fail with
//     ENODEV, driver calls in flight finish, the workers exit;
//  3. resources: the name is freed for reuse, the owner hook cancelled
//     and the owner's pin dropped.
func (d *Disk) join(ctx context.Context, dev *device.Device) error {
	t := dev.Core().Sysfs()
	if _, err := dev.AddResource("block: "+d.name, d.release); err != nil {
		return err
	}
	if _, err := dev.AddSeverable("block: queue", device.StageProviders, d.q.Kill); err != nil {
		return err
	}
	link, err := t.AddSymlink(d.reg.dir, d.name, dev.Dir(), nil)
	if err != nil {
		return &sever.ObjectError{Object: d.obj, Err: err}
	}
	d.link = link
	if _, err := dev.AddSeverable("block: stop", device.StageFiles, d.stop); err != nil {
		return err
	}
	if o := d.owner; o != nil {
		cancel, err := o.OnUnload(d.obj, d.Del)
		if err != nil {
			return err
		}
		d.reg.mu.Lock()
		if d.released { // deleted meanwhile: release has run without it
			d.reg.mu.Unlock()
			cancel()
			return nil
		}
		d.cancelHook = cancel
		d.reg.mu.Unlock()
	}
	return nil
}

// stop is step 1 of deletion: refuse new requests and unlink /block/<name>.
func (d *Disk) stop(ctx context.Context) error {
	d.dying.Store(true)
	return d.reg.tree.Remove(ctx, d.link)
}

// release is step 3 of deletion, and the undo of a failed AddDisk. It runs
// once.
func (d *Disk) release() {
	d.releaseOnce.Do(func() {
		d.reg.forget(d)
		d.reg.mu.Lock()
		cancel := d.cancelHook
		d.cancelHook, d.released = nil, true
		d.reg.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		if d.owner != nil {
			d.owner.Put(d)
		}
	})
}

// Del deletes the disk (del_gendisk) and returns when it is deleted: the
// disk's attribute files are severed (no Show or Store runs now or later;
// open files return errors wrapping sever.ErrNoDevice; Lookup of its
// paths fails with ENOENT), Submit fails with ErrNoDevice, requests still
// queued fail with ErrNoDevice without reaching the driver, requests with
// the driver run to their end, and then the driver is never called again
// for this disk: it may free its state and its code may go. Del never
// waits for an open file to be closed.
//
// Del unregisters the disk's device, so it is what the removal of the
// parent device or the end of the binding that created the disk does; Del
// is idempotent and safe to call concurrently with those and with itself:
// every call returns when the deletion is done. If ctx ends while
// attribute calls or driver calls are still in flight, Del returns their
// holders' error (recording check.SeverTimeout) and the disk stays dying.
//
// Del must not be called from one of the disk's own attribute callbacks
// (it would wait for that callback: use DelSelf) nor from the driver's
// QueueRq (it would wait for that call: start Del on another goroutine).
func (d *Disk) Del(ctx context.Context) error {
	return d.dev.Load().Unregister(ctx)
}

// DelSelf deletes the disk from inside Show or Store of one of the disk's
// own attributes — zram's reset, SCSI's delete — without deadlocking on
// that call: it removes the disk's directory with c.RemoveSelf, which does
// not wait for the caller, and then deletes the disk as Del does. It
// returns when the disk is deleted, whoever began the deletion.
//
// After DelSelf returns — and, strictly, from the moment it is called —
// the callback must not touch the driver's state for this disk nor c's
// per-open state: the deletion lets the driver free them. c must be the
// Call of an attribute in the disk's directory (or below it); otherwise
// DelSelf panics, as kernfs.Call.RemoveSelf does.
func (d *Disk) DelSelf(ctx context.Context, c *kernfs.Call) error {
	d.dying.Store(true) // refuse I/O at once, as the removal path will
	if _, err := c.RemoveSelf(ctx, d.dev.Load().Dir()); err != nil {
		return err
	}
	// The directory is gone and our call no longer holds it, so nothing the
	// rest of the removal path waits for is ours.
	return d.dev.Load().Unregister(ctx)
}

// Name returns the disk's name.
func (d *Disk) Name() string { return d.name }

// Device returns the disk's device (of class "block"). It is set before
// any callback of the disk runs.
func (d *Disk) Device() *device.Device { return d.dev.Load() }

// Deleted reports whether deletion of the disk has begun.
func (d *Disk) Deleted() bool { return d.dying.Load() }

// Capacity returns the disk's size in 512-byte sectors.
func (d *Disk) Capacity() int64 { return d.capacity.Load() }

// SetCapacity sets the disk's size in 512-byte sectors (set_capacity, as
// zram's disksize does). Pollers of the size attribute are notified and,
// if the size changed, a "change" uevent with RESIZE=1 is emitted. It
// does not wait for requests in flight, which were checked against the old
// size: to change the size with no request in flight — shrinking under a
// driver that frees the space — Freeze first. It fails with an error
// wrapping sever.ErrInvalid for a negative size and sever.ErrNoDevice once
// the disk is being deleted.
func (d *Disk) SetCapacity(sectors int64) error {
	if sectors < 0 {
		return &sever.ObjectError{Object: d.obj, Err: fmt.Errorf("negative capacity %d: %w", sectors, sever.ErrInvalid)}
	}
	if d.dying.Load() {
		return d.gone
	}
	old := d.capacity.Swap(sectors)
	if n := d.sizeNode.Load(); n != nil {
		d.reg.tree.Notify(n)
	}
	if old != sectors {
		if dev := d.dev.Load(); dev != nil {
			dev.Notify(map[string]string{"RESIZE": "1"})
		}
	}
	return nil
}

// ReadOnly reports whether the disk refuses writes and discards.
func (d *Disk) ReadOnly() bool { return d.ro.Load() }

// SetReadOnly makes the disk refuse (or accept again) writes and discards
// with ErrReadOnly, as writing queue/read_only does (set_disk_ro).
// Requests already submitted are not affected.
func (d *Disk) SetReadOnly(ro bool) { d.ro.Store(ro) }

// LogicalBlockSize returns the disk's logical block size in bytes.
func (d *Disk) LogicalBlockSize() int { return int(d.lbs) }

// Depth returns the queue depth (nr_requests).
func (d *Disk) Depth() int { return d.depth }

// Freeze waits until no request is in flight and holds new ones back until
// Unfreeze (see blockq.Queue.Freeze): the driver can then change what its
// requests depend on. It must not be called from the driver's QueueRq.
func (d *Disk) Freeze(ctx context.Context) error { return d.q.Freeze(ctx) }

// Unfreeze undoes one Freeze that returned nil.
func (d *Disk) Unfreeze() { d.q.Unfreeze() }

// registry is one machine's disks: their names, the "block" class and
// /block.
type registry struct {
	class *device.Class
	tree  *kernfs.Tree
	dir   *kernfs.Node // /block

	mu    sync.Mutex
	disks map[string]*Disk
}

type registryKey struct{}

func registryOf(c *device.Core) *registry {
	return device.Local(c, registryKey{}, func() *registry {
		cl, err := c.NewClass("block", func(d *device.Device, env map[string]string) {
			env["DEVTYPE"] = "disk"
			env["DEVNAME"] = d.Name()
		})
		if err != nil { // a racing first use made it
			cl = c.Class("block")
		}
		t := c.Sysfs()
		dir, err := t.AddDir(t.Root(), kernfs.Dir{Name: "block"})
		if err != nil {
			dir, _ = t.Lookup("/block")
		}
		return &registry{class: cl, tree: t, dir: dir, disks: make(map[string]*Disk)}
	})
}

// reserve claims d's name on the machine.
func (r *registry) reserve(d *Disk) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.disks[d.name] != nil {
		return &sever.ObjectError{Object: d.obj, Err: sever.ErrExist}
	}
	r.disks[d.name] = d
	return nil
}

// forget frees d's name, if d holds it.
func (r *registry) forget(d *Disk) {
	r.mu.Lock()
	if r.disks[d.name] == d {
		delete(r.disks, d.name)
	}
	r.mu.Unlock()
}
