// Package zram is a zram-like compressed RAM disk, the driver of seed 001
// (DESIGN.md, "Seed 001"): module "zram", whose disks are configured, reset and removed through
// their own sysfs attributes while the module itself may be unloaded.
//
// The module's files, as in Linux:
//
//	/devices/zram-control/hot_add      read: add a disk, print its index
//	/devices/zram-control/hot_remove   write an index: remove that disk
//	/block/zramN/disksize              bytes (memparse: 64M); set once, then EBUSY until reset
//	/block/zramN/comp_algorithm        "lzo lzo-rle [lz4] zstd"; EBUSY once disksize is set
//	/block/zramN/reset                 write 1: remove this disk (a Store that removes its own disk)
//
// Each disk's private data (struct zram: its size, algorithm and pages) is
// check.State, so a use after it is freed is recorded. The Stores of
// disksize and comp_algorithm take the module's zram_index_mutex, which
// hot_add, hot_remove and the module's exit take too: the lock seed 001's
// first race is about.
//
// Correct, as a driver author writes it against sever: the disks and the
// control files are the module's code (DiskConfig.Owner, device Owner), so
// unloading the module first deletes every disk — draining the attribute
// calls in flight — and only then runs the exit function, which takes
// zram_index_mutex with no attribute left to want it. Each disk's private
// data is a managed resource of the disk's device, freed by the deletion
// path after the attributes and the queue have drained, whichever path
// deleted it (reset, hot_remove, rmmod, the machine's shutdown). reset
// removes its own disk with block.Disk.DelSelf.
//
// Naive, the two races of seed 001 (see Bugs).
package zram

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/block"
)

// ModuleName is the name Load inserts the module under.
const ModuleName = "zram"

// Bugs selects naive behaviours, one bit per race of seed 001; zero is the
// correct driver.
type Bugs uint

const (
	// BugExitHoldsLock is the first race of seed 001, "deadlock when a
	// sysfs attribute uses a lock which is also used on module __exit":
	// the driver registers its files without tying them to its module
	// (no Owner, so nothing is severed before exit and nothing pins the
	// module — rmmod's try succeeds), and its exit function deletes the
	// disks itself while holding zram_index_mutex, which disksize and
	// comp_algorithm take. A Store in flight blocks on the lock; the
	// deletion waits for the Store. Config.HungTaskTimeout later the
	// drain records check.SeverTimeout naming the stuck attribute (and,
	// with tracking, the stack of the write that holds it); the exit then
	// goes on waiting, as the kernel's would, until the writer is killed.
	BugExitHoldsLock Bugs = 1 << iota
	// BugFreeBeforeDrain is the second race of seed 001, "race against
	// the device's private data": hot_remove and reset free the disk's
	// struct zram first and delete the disk after, so an attribute call
	// that is about to use it — or in flight — when del_gendisk runs uses
	// freed memory: check.UseAfterFree.
	BugFreeBeforeDrain
)

// Config configures the module at Load.
type Config struct {
	Bugs Bugs
	// Devices is num_devices, the disks made at load (zram0...); 0 means 1.
	Devices int
	// StoreDelay, if set, runs at the start of every Store of a disk's
	// disksize and comp_algorithm, on the writing goroutine, inside the
	// attribute call, before the Store takes a lock or touches the disk:
	// the msleep a reproducer inserts to hold a Store in flight. ctx is
	// the write's (kernfs.Call.Context). It must return, at the latest
	// when ctx is done.
	StoreDelay func(ctx context.Context, z *Zram, attr string)
	// HungTaskTimeout is how long the naive exit (BugExitHoldsLock) waits
	// in del_gendisk before the machine's hung-task detector reports it as
	// check.SeverTimeout; 0 means 50ms. The correct driver never uses it.
	HungTaskTimeout time.Duration
}

// Module is the loaded zram module: its owner, its control device and its
// disks.
//
//	loaded ──rmmod (disks deleted, then exit)──▶ unloaded
type Module struct {
	m       *sim.Machine
	owner   *sever.Owner
	cfg     Config
	control *device.Device

	// index is zram_index_mutex: a killable mutex (a channel of one slot)
	// taken by hot_add, hot_remove, exit and the disk Stores. A waiter
	// whose context ends gives up with EINTR, as mutex_lock_killable.
	index chan struct{}

	mu   sync.Mutex // guards devs; a leaf lock, never held across a call out
	devs map[int]*Zram
}

// Zram is one disk and its private data (struct zram).
//
//	live ──reset | hot_remove | rmmod | shutdown──▶ deleted ──▶ private data freed
//
// Correct, the private data is freed by the disk's deletion path after its
// attribute calls and requests have drained; naive (BugFreeBeforeDrain),
// before.
type Zram struct {
	mod   *Module
	id    int
	name  string
	disk  *block.Disk
	dir   *kernfs.Node // the disk device's directory
	state *check.State[*zramState]
	once  sync.Once // the private data is freed once
}

// zramState is struct zram's contents. Guarded by its own mu once reached
// through state.Use.
type zramState struct {
	mu       sync.Mutex
	disksize int64
	comp     string
	pages    map[int64][]byte // by sector, PageSize each
}

// Algorithms are the compressors comp_algorithm accepts.
var Algorithms = []string{"lzo", "lzo-rle", "lz4", "zstd"}

const (
	defaultComp = "lzo-rle"
	pageSize    = 4096
)

// Load inserts module "zram" on m (insmod zram num_devices=cfg.Devices):
// it creates the control device /devices/zram-control with hot_add and
// hot_remove, and the first disks. The module's exit is the package's;
// unload it with m.Rmmod or through Owner.
func Load(ctx context.Context, m *sim.Machine, cfg Config) (*Module, error) {
	if cfg.Devices == 0 {
		cfg.Devices = 1
	}
	if cfg.HungTaskTimeout == 0 {
		cfg.HungTaskTimeout = 50 * time.Millisecond
	}
	mod := &Module{m: m, cfg: cfg, index: make(chan struct{}, 1), devs: make(map[int]*Zram)}
	owner, err := m.Insmod(ModuleName, mod.exit)
	if err != nil {
		return nil, err
	}
	mod.owner = owner
	cl := m.Core().Class("zram-control")
	if cl == nil {
		if cl, err = m.Core().NewClass("zram-control", nil); err != nil {
			return nil, err
		}
	}
	mod.control, err = m.Core().Register(ctx, device.Config{
		Name:  "zram-control",
		Class: cl,
		Owner: mod.codeOwner(),
		Groups: []device.AttrGroup{{Attrs: []device.Attr{
			{Name: "hot_add", Show: mod.showHotAdd},
			{Name: "hot_remove", Store: mod.storeHotRemove, Parse: kernfs.Int(0, 1<<20)},
		}}},
	})
	if err != nil {
		return nil, err
	}
	for range cfg.Devices {
		if _, err := mod.HotAdd(ctx); err != nil {
			return nil, err
		}
	}
	return mod, nil
}

// codeOwner is the owner the module declares for its files and disks: its
// own, or none for the naive driver of BugExitHoldsLock.
func (mod *Module) codeOwner() *sever.Owner {
	if mod.cfg.Bugs&BugExitHoldsLock != 0 {
		return nil
	}
	return mod.owner
}

// Owner returns the module's owner ("zram").
func (mod *Module) Owner() *sever.Owner { return mod.owner }

// ControlPath returns the control device's directory path.
func (mod *Module) ControlPath() string { return mod.control.Path() }

// Device returns disk zram<id>, or nil if there is none now.
func (mod *Module) Device(id int) *Zram {
	mod.mu.Lock()
	defer mod.mu.Unlock()
	return mod.devs[id]
}

// lock takes zram_index_mutex, or fails with an error wrapping ctx's if
// ctx ends first (a killed waiter).
func (mod *Module) lock(ctx context.Context) error {
	select {
	case mod.index <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("zram_index_mutex: %w", ctx.Err())
	}
}

func (mod *Module) unlock() { <-mod.index }

// HotAdd adds a disk, zram<N> with the lowest free N, as reading hot_add
// does. It fails with an error wrapping sever.ErrNoDevice once the module
// is unloading.
func (mod *Module) HotAdd(ctx context.Context) (*Zram, error) {
	if err := mod.lock(ctx); err != nil {
		return nil, err
	}
	defer mod.unlock()
	mod.mu.Lock()
	id := 0
	for mod.devs[id] != nil {
		id++
	}
	z := &Zram{mod: mod, id: id, name: "zram" + strconv.Itoa(id)}
	z.state = check.NewState(mod.m.Log(), z.name+" private data (struct zram)", &zramState{comp: defaultComp, pages: make(map[int64][]byte)})
	mod.devs[id] = z
	mod.mu.Unlock()
	disk, err := block.AddDisk(ctx, mod.control, block.DiskConfig{
		Name:   z.name,
		Driver: blockq.DriverFunc(z.queueRq),
		Owner:  mod.codeOwner(),
		Attrs: []block.Attr{
			{Name: "disksize", Show: z.showDisksize, Store: mod.store(z, "disksize", z.setDisksize), Parse: memparse},
			{Name: "comp_algorithm", Show: z.showComp, Store: mod.store(z, "comp_algorithm", z.setComp), Parse: kernfs.Enum(Algorithms...)},
			{Name: "reset", Store: z.storeReset, Parse: kernfs.Bool()},
		},
	})
	if err != nil {
		mod.mu.Lock()
		delete(mod.devs, id)
		mod.mu.Unlock()
		return nil, err
	}
	z.disk = disk
	z.dir = disk.Device().Dir()
	if mod.cfg.Bugs&BugFreeBeforeDrain == 0 {
		// The private data is the disk device's managed resource: released
		// by the deletion path after the files and the queue have drained.
		if _, err := disk.Device().AddResource("zram: struct zram", func() { z.free("del_gendisk done: attributes and queue drained") }); err != nil {
			return nil, errors.Join(err, disk.Del(ctx))
		}
	}
	mod.m.Record(sim.KindEntered, z.dir.Path(), "zram_add: "+z.name)
	return z, nil
}

// HotRemove removes disk zram<id>, as writing id to hot_remove does: it
// deletes the disk (draining its attribute calls and requests) and then —
// correct — its private data is freed. It fails with an error wrapping
// sever.ErrNoDevice if there is no such disk.
func (mod *Module) HotRemove(ctx context.Context, id int) error {
	if err := mod.lock(ctx); err != nil {
		return err
	}
	mod.mu.Lock()
	z := mod.devs[id]
	mod.mu.Unlock()
	mod.unlock()
	if z == nil {
		return &sever.ObjectError{Object: fmt.Sprintf("zram%d", id), Err: sever.ErrNoDevice}
	}
	return z.remove(ctx, nil)
}

func (mod *Module) showHotAdd(c *kernfs.Call, _ *device.Device, buf []byte) ([]byte, error) {
	z, err := mod.HotAdd(c.Context())
	if err != nil {
		return nil, err
	}
	return append(strconv.AppendInt(buf, int64(z.id), 10), '\n'), nil
}

func (mod *Module) storeHotRemove(c *kernfs.Call, _ *device.Device, v any) error {
	mod.m.Record(sim.KindEntered, c.Path(), fmt.Sprintf("hot_remove_store %d", v.(int64)))
	return mod.HotRemove(c.Context(), int(v.(int64)))
}

// remove deletes z: from hot_remove (c nil) or from its own reset (c its
// Call). Whoever deletes, the private data is freed once.
func (z *Zram) remove(ctx context.Context, c *kernfs.Call) error {
	m := z.mod.m
	path := z.dir.Path()
	if z.mod.cfg.Bugs&BugFreeBeforeDrain != 0 {
		// The seed's second race: kfree(zram) while an attribute may be
		// about to use it, del_gendisk after.
		z.free("freed before del_gendisk (naive)")
	}
	m.Record(sim.KindSevered, path, "del_gendisk")
	var err error
	if c != nil {
		err = z.disk.DelSelf(ctx, c)
	} else {
		err = z.disk.Del(ctx)
	}
	m.Record(sim.KindDrained, path, errText(err, "no attribute call or request runs now or later"))
	return err
}

// free frees the private data, once, and forgets the disk's index.
func (z *Zram) free(why string) {
	z.once.Do(func() {
		z.state.Free()
		z.mod.mu.Lock()
		if z.mod.devs[z.id] == z {
			delete(z.mod.devs, z.id)
		}
		z.mod.mu.Unlock()
		z.mod.m.Record(sim.KindFreed, "zram: "+z.name, "struct zram: "+why)
	})
}

// Freed reports whether the disk's private data has been freed.
func (z *Zram) Freed() bool { return z.state.Freed() }

// exit is zram_exit: run by the owner's Unload after its hooks.
func (mod *Module) exit() {
	if mod.cfg.Bugs&BugExitHoldsLock != 0 {
		mod.exitHoldingLock()
		return
	}
	// Every disk was deleted by the unload hooks before this runs, its
	// attribute calls drained: nobody can be waiting for the lock.
	ctx := context.Background()
	_ = mod.lock(ctx) // without a deadline it cannot fail
	mod.mu.Lock()
	var left []*Zram
	for _, z := range mod.devs {
		left = append(left, z)
	}
	mod.mu.Unlock()
	for _, z := range left {
		z.free("module exit, after its disks were deleted")
	}
	mod.unlock()
	mod.unregisterControl(ctx)
}

// unregisterControl removes /devices/zram-control at exit, which cannot
// fail the unload: an error is recorded in the machine's trace.
func (mod *Module) unregisterControl(ctx context.Context) {
	if err := mod.control.Unregister(ctx); err != nil {
		mod.m.Record(sim.KindStep, "/devices/zram-control", "zram_exit: unregister: "+err.Error())
	}
}

// exitHoldingLock is the naive zram_exit of BugExitHoldsLock:
// destroy_devices under zram_index_mutex.
func (mod *Module) exitHoldingLock() {
	ctx := context.Background()
	_ = mod.lock(ctx) // without a deadline it cannot fail
	mod.mu.Lock()
	var devs []*Zram
	for _, z := range mod.devs {
		devs = append(devs, z)
	}
	mod.mu.Unlock()
	for _, z := range devs {
		path := z.dir.Path()
		mod.m.Record(sim.KindSevered, path, "zram_exit: del_gendisk under zram_index_mutex")
		hung, cancel := context.WithTimeout(ctx, mod.cfg.HungTaskTimeout)
		err := z.disk.Del(hung)
		cancel()
		if err != nil {
			// The hung-task detector has reported the drain (the
			// SeverTimeout above). The kernel would stay blocked here;
			// so does this exit, until the attribute call drains.
			mod.m.Record(sim.KindStep, path, "hung task: rmmod blocked in del_gendisk: "+err.Error())
			if err := mod.m.Sysfs().Remove(ctx, z.dir); err != nil {
				mod.m.Record(sim.KindStep, path, "zram_exit: remove: "+err.Error())
			}
		}
		mod.m.Record(sim.KindDrained, path, "del_gendisk returned")
	}
	mod.unlock()
	mod.unregisterControl(ctx)
}

// Name returns the disk's name, "zramN".
func (z *Zram) Name() string { return z.name }

// ID returns the disk's index N.
func (z *Zram) ID() int { return z.id }

// Disk returns the block disk.
func (z *Zram) Disk() *block.Disk { return z.disk }

// Path returns the disk's attribute directory as /block/zramN.
func (z *Zram) Path() string { return "/block/" + z.name }

// store wraps a Store of a disk attribute: the reproducer's delay, then
// zram_index_mutex (held for the whole Store), then the private data.
func (mod *Module) store(z *Zram, attr string, set func(st *zramState, v any) error) func(*kernfs.Call, *block.Disk, any) error {
	return func(c *kernfs.Call, d *block.Disk, v any) error {
		ctx := c.Context()
		mod.m.Record(sim.KindEntered, c.Path(), fmt.Sprintf("%s_store %v", attr, v))
		if f := mod.cfg.StoreDelay; f != nil {
			f(ctx, z, attr)
		}
		if err := mod.lock(ctx); err != nil {
			return err
		}
		defer mod.unlock()
		st, ok := z.state.Use(attr + "_store")
		if !ok {
			return sever.ErrNoDevice
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		return set(st, v)
	}
}

func (z *Zram) setDisksize(st *zramState, v any) error {
	if st.disksize != 0 {
		return sever.ErrBusy // "Cannot change disksize for initialized device"
	}
	size := (v.(int64) + pageSize - 1) / pageSize * pageSize
	if size == 0 {
		return sever.ErrInvalid
	}
	if err := z.disk.SetCapacity(size / block.SectorSize); err != nil {
		return err
	}
	st.disksize = size
	return nil
}

func (z *Zram) setComp(st *zramState, v any) error {
	if st.disksize != 0 {
		return sever.ErrBusy // "Can't change algorithm for initialized device"
	}
	st.comp = v.(string)
	return nil
}

func (z *Zram) showDisksize(c *kernfs.Call, d *block.Disk, buf []byte) ([]byte, error) {
	st, ok := z.state.Use("disksize_show")
	if !ok {
		return nil, sever.ErrNoDevice
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return append(strconv.AppendInt(buf, st.disksize, 10), '\n'), nil
}

func (z *Zram) showComp(c *kernfs.Call, d *block.Disk, buf []byte) ([]byte, error) {
	st, ok := z.state.Use("comp_algorithm_show")
	if !ok {
		return nil, sever.ErrNoDevice
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for i, a := range Algorithms {
		if i > 0 {
			buf = append(buf, ' ')
		}
		if a == st.comp {
			buf = append(append(append(buf, '['), a...), ']')
		} else {
			buf = append(buf, a...)
		}
	}
	return append(buf, '\n'), nil
}

// storeReset is reset_store: writing 1 removes this very disk, from its own
// attribute, with DelSelf (no deadlock on this Store).
func (z *Zram) storeReset(c *kernfs.Call, d *block.Disk, v any) error {
	if !v.(bool) {
		return sever.ErrInvalid
	}
	z.mod.m.Record(sim.KindEntered, c.Path(), "reset_store 1")
	// From here on this Store must not touch the private data: the
	// deletion frees it.
	return z.remove(c.Context(), c)
}

// queueRq performs I/O on the private data's pages.
func (z *Zram) queueRq(ctx context.Context, rq *blockq.Request) error {
	st, ok := z.state.Use("zram_submit_bio")
	if !ok {
		return sever.ErrIO
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	const per = pageSize / block.SectorSize
	for off := 0; off < len(rq.Data); off += block.SectorSize {
		sector := rq.Sector + int64(off/block.SectorSize)
		page, in := sector/per*per, int(sector%per)*block.SectorSize
		chunk := rq.Data[off : off+block.SectorSize]
		switch rq.Op {
		case blockq.OpRead:
			if p := st.pages[page]; p != nil {
				copy(chunk, p[in:])
			} else {
				clear(chunk)
			}
		case blockq.OpWrite:
			p := st.pages[page]
			if p == nil {
				p = make([]byte, pageSize)
				st.pages[page] = p
			}
			copy(p[in:], chunk)
		case blockq.OpDiscard:
			delete(st.pages, page)
		}
	}
	return nil
}

// memparse parses a size as the kernel's memparse: a number with an
// optional K, M or G suffix (any case).
func memparse(s string) (any, error) {
	s = strings.TrimSpace(s)
	mul := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mul, s = 1<<10, s[:n-1]
		case 'm', 'M':
			mul, s = 1<<20, s[:n-1]
		case 'g', 'G':
			mul, s = 1<<30, s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < 0 || v > 1<<40/mul {
		return nil, sever.ErrInvalid
	}
	return v * mul, nil
}

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}
