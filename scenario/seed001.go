package scenario

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim/zram"
)

// seed001 is seed 001 (zram and module removal, Apr 2021): zram's sysfs
// knobs used while the module is removed, and while a disk is reset or
// hot-removed — the thread's two races.
//
// zram-rmmod, the first race ("deadlock when a sysfs attribute uses a lock
// which is also used on module __exit"), and try against force: a process
// writes comp_algorithm — a Store that takes zram_index_mutex — and is in
// flight when rmmod zram runs. Correct: rmmod's try is refused with EBUSY
// while the disk exists (its files and disk pin the module); the forced
// rmmod deletes the disk first — draining the Store, which takes the lock
// unopposed — and only then runs zram's exit, which takes the lock with no
// attribute left to want it. Naive (zram.BugExitHoldsLock): the files do
// not pin the module, so the try unloads; zram's exit deletes the disk
// while holding zram_index_mutex, the Store waits for the lock, the
// deletion for the Store: the drain's deadline records
// check.SeverTimeout naming the attribute (and, with tracking, the write
// holding it). The operator then kills the writer, which frees the lock
// waiter and lets rmmod finish, so nothing stays hung.
//
// zram-remove, the second race ("race against the device's private
// data"): the same writer is in flight while zram0 is removed by its own
// reset attribute (a Store removing its own disk) or by hot_remove — the
// seed chooses. Correct: the private data is freed by the deletion path
// after the attribute calls and requests drained. Naive
// (zram.BugFreeBeforeDrain): it is freed before del_gendisk, and the
// Store in flight uses it — check.UseAfterFree.
func seed001() []Scenario {
	return []Scenario{{
		Name:     "zram-rmmod",
		Seed:     "001",
		Doc:      "DESIGN.md#seed-001",
		Title:    "rmmod zram (try, then force) while a process writes comp_algorithm",
		Bug:      "zram's exit deletes its disks under zram_index_mutex, which the attribute's Store takes",
		Catches:  check.SeverTimeout,
		Tracking: true, // the verdict names the stuck write's stack
		Run:      runZramRmmod,
	}, {
		Name:    "zram-remove",
		Seed:    "001",
		Doc:     "DESIGN.md#seed-001",
		Title:   "reset or hot_remove zram0 while its attributes are in use",
		Bug:     "the disk's private data is freed before del_gendisk has drained its attributes",
		Catches: check.UseAfterFree,
		Run:     runZramRemove,
	}}
}

// slowKey marks the context of the write that zram's StoreDelay holds in
// flight until the disk's deletion has begun.
type slowKey struct{}

// zramRig is what both zram scenarios set up: the module with zram0, the
// slow writer's hook, and files held open.
type zramRig struct {
	mod    *zram.Module
	z0     *zram.Zram
	inside chan struct{} // closed when the slow Store is in flight
	// procs is the context of every write the scenario's processes make;
	// kill cancels it (kill -9 of every writer: zram's lock waits are
	// killable).
	procs context.Context
	kill  context.CancelFunc
}

func setupZram(r *Run, bugs zram.Bugs) (*zramRig, error) {
	rig := &zramRig{inside: make(chan struct{})}
	rig.procs, rig.kill = context.WithCancel(r.Context())
	var once sync.Once
	delay := func(ctx context.Context, z *zram.Zram, attr string) {
		if ctx.Value(slowKey{}) == nil {
			return
		}
		once.Do(func() { close(rig.inside) })
		// Hold the Store in flight until the disk's deletion has begun
		// (or the writer is killed).
		for !z.Disk().Deleted() && ctx.Err() == nil {
			time.Sleep(50 * time.Microsecond)
		}
	}
	mod, err := zram.Load(r.Context(), r.M, zram.Config{Bugs: bugs, StoreDelay: delay, HungTaskTimeout: 5 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	rig.mod = mod
	rig.z0 = mod.Device(0)
	if rig.z0 == nil {
		return nil, errors.New("zram0 not created at load")
	}
	return rig, nil
}

// startSlowWriter starts the process whose comp_algorithm write is in
// flight across the removal, and returns when its Store is inside. done
// is closed when the write has returned.
func (rig *zramRig) startSlowWriter(r *Run) (done chan struct{}, err error) {
	path := rig.z0.Path() + "/comp_algorithm"
	f, err := r.M.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return nil, err
	}
	wctx := context.WithValue(rig.procs, slowKey{}, true)
	done = make(chan struct{})
	r.Step("writer: echo zstd > %s (its Store stays in flight)", path)
	r.Go(func(rng *rand.Rand) {
		defer close(done)
		defer r.Close("f", f)
		_, err := f.WriteAtContext(wctx, []byte("zstd\n"), 0)
		r.Op()
		switch {
		case err == nil, errors.Is(err, sever.ErrBusy), errors.Is(err, sever.ErrNoDevice):
		case errors.Is(err, context.Canceled) && r.Naive():
		default:
			r.Failf("write comp_algorithm across the removal: %v; want nil, EBUSY or ENODEV", err)
		}
		r.Step("writer: write returned %v", err)
	})
	select {
	case <-rig.inside:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return done, nil
}

// zramOps are the consumer operations of both scenarios on zram0, in an
// order in which each succeeds while the disk is live.
func zramOps(r *Run, rig *zramRig, z *zram.Zram) (ops []Op, closeAll func(), err error) {
	t := r.M.Sysfs()
	dir := z.Path()
	sizeF, err := t.Open(dir+"/disksize", os.O_RDWR)
	if err != nil {
		return nil, nil, err
	}
	compF, err := t.Open(dir+"/comp_algorithm", os.O_RDWR)
	if err != nil {
		r.Close("sizeF", sizeF)
		return nil, nil, err
	}
	closeAll = func() { r.Close("disksize", sizeF); r.Close("comp_algorithm", compF) }
	buf := make([]byte, 128)
	cat := func(path string) error {
		f, err := t.Open(path, os.O_RDONLY)
		if err != nil {
			return err
		}
		defer r.Close("f", f)
		_, err = f.Read(buf)
		return err
	}
	held := func(f interface {
		ReadAt([]byte, int64) (int, error)
	}) func() error {
		return func() error { _, err := f.ReadAt(buf, 0); return err }
	}
	gone := []error{sever.ErrNoDevice}
	byPath := []error{sever.ErrNotExist, sever.ErrNoDevice}
	if r.Naive() { // a writer stuck in the naive driver is killed
		gone = append(gone, context.Canceled)
	}
	write := func(f *kernfs.File, v string) func() error {
		return func() error { _, err := f.WriteAtContext(rig.procs, []byte(v), 0); return err }
	}
	disk := z.Disk()
	page := make([]byte, 4096)
	for i := range page {
		page[i] = byte(i*7 + 1)
	}
	wrote := false
	var sizeErr error
	ops = []Op{
		{Name: "echo lz4 > comp_algorithm (held open)", Gone: gone, Do: write(compF, "lz4\n")},
		{Name: "cat comp_algorithm (held open)", Gone: gone, Do: held(compF)},
		{Name: "cat " + dir + "/comp_algorithm", Gone: byPath, Do: func() error { return cat(dir + "/comp_algorithm") }},
		{Name: "echo 1M > disksize (held open)", Gone: gone, Do: func() error {
			sizeErr = write(sizeF, "1M\n")()
			return sizeErr
		}},
		{Name: "mkswap: write a page to /dev/" + z.Name(), Gone: gone, Do: func() error {
			if sizeErr != nil {
				// The disk has no size: the removal (or rmmod, which
				// refuses new attribute calls at once) refused it.
				return fmt.Errorf("mkswap: disksize was refused: %w", sizeErr)
			}
			err := disk.Submit(r.Context(), &blockq.Request{Op: blockq.OpWrite, Sector: 8, Data: page})
			wrote = err == nil
			return err
		}},
		{Name: "read the page back", Gone: gone, Do: func() error {
			if sizeErr != nil {
				return fmt.Errorf("disksize was refused: %w", sizeErr)
			}
			got := make([]byte, len(page))
			err := disk.Submit(r.Context(), &blockq.Request{Op: blockq.OpRead, Sector: 8, Data: got})
			if err == nil && wrote && string(got) != string(page) {
				r.Failf("read back from %s differs from what was written", z.Name())
			}
			return err
		}},
		{Name: "cat disksize (held open)", Gone: gone, Do: held(sizeF)},
		{Name: "cat " + dir + "/disksize", Gone: byPath, Do: func() error { return cat(dir + "/disksize") }},
	}
	return ops, closeAll, nil
}

func runZramRmmod(r *Run) error {
	ctx := r.Context()
	var bugs zram.Bugs
	if r.Naive() {
		bugs = zram.BugExitHoldsLock
	}
	r.Step("insmod zram num_devices=1")
	rig, err := setupZram(r, bugs)
	if err != nil {
		return err
	}
	owner := rig.mod.Owner()

	// The hung-task detector's report is the verdict; the operator then
	// kills the stuck writer, so the naive rmmod finishes too.
	hung := make(chan struct{})
	var hungOnce sync.Once
	r.M.Log().Observe(func(v check.Violation) {
		if v.Class == check.SeverTimeout {
			hungOnce.Do(func() { close(hung) })
		}
	})
	defer rig.kill()
	writerDone, err := rig.startSlowWriter(r)
	if err != nil {
		return err
	}
	r.Go(func(*rand.Rand) {
		select {
		case <-hung:
			r.Step("operator: rmmod is hung; kill -9 the writers of zram's attributes")
			rig.kill()
		case <-writerDone:
		case <-ctx.Done():
		}
	})

	ops, closeAll, err := zramOps(r, rig, rig.z0)
	if err != nil {
		return err
	}
	defer closeAll()
	err = r.Interleave(ops, Op{Name: "rmmod zram: try, then force", Do: func() error {
		err := owner.Unload(ctx, sever.UnloadTry)
		switch {
		case errors.Is(err, sever.ErrBusy):
			r.Step("rmmod --try zram: %v", err)
		case r.Variant == Correct:
			r.Failf("rmmod --try zram while zram0 exists: %v; want EBUSY", err)
		default:
			r.Step("rmmod --try zram: %v (nothing pinned the module)", err)
		}
		if owner.State() == sever.OwnerGone {
			return nil
		}
		return r.M.Rmmod(ctx, zram.ModuleName)
	}})
	if err != nil {
		return err
	}
	<-writerDone
	if r.Variant == Correct {
		if st := owner.State(); st != sever.OwnerGone {
			r.Failf("zram after rmmod: %v, want gone", st)
		}
		if !rig.z0.Freed() {
			r.Failf("zram0's private data not freed after rmmod")
		}
		if _, err := r.M.Sysfs().Lookup(rig.z0.Path()); !errors.Is(err, sever.ErrNotExist) {
			r.Failf("lookup %s after rmmod: %v, want ENOENT", rig.z0.Path(), err)
		}
	}
	if err := r.M.Rmmod(ctx, zram.ModuleName); !errors.Is(err, sever.ErrNotExist) {
		r.Failf("second rmmod zram: %v, want ENOENT", err)
	}
	return nil
}

func runZramRemove(r *Run) error {
	ctx := r.Context()
	var bugs zram.Bugs
	if r.Naive() {
		bugs = zram.BugFreeBeforeDrain
	}
	r.Step("insmod zram num_devices=1")
	rig, err := setupZram(r, bugs)
	if err != nil {
		return err
	}
	mod, z0 := rig.mod, rig.z0
	ctl := mod.ControlPath()
	t := r.M.Sysfs()

	// A second disk, added through hot_add, must be untouched by zram0's
	// removal.
	r.Step("cat %s/hot_add", ctl)
	if err := readAttr(r, ctl+"/hot_add"); err != nil {
		return err
	}
	z1 := mod.Device(1)
	if z1 == nil {
		return errors.New("hot_add did not add zram1")
	}

	var disrupt Op
	if r.Rand.Intn(2) == 0 {
		reset, err := t.Open(z0.Path()+"/reset", os.O_WRONLY)
		if err != nil {
			return err
		}
		defer r.Close("reset", reset)
		disrupt = Op{Name: "echo 1 > " + z0.Path() + "/reset (held open): the disk removes itself", Do: func() error {
			_, err := reset.Write([]byte("1\n"))
			return err
		}}
	} else {
		rm, err := t.Open(ctl+"/hot_remove", os.O_WRONLY)
		if err != nil {
			return err
		}
		defer r.Close("rm", rm)
		disrupt = Op{Name: "echo 0 > " + ctl + "/hot_remove", Do: func() error {
			_, err := rm.Write([]byte("0\n"))
			return err
		}}
	}

	defer rig.kill()
	writerDone, err := rig.startSlowWriter(r)
	if err != nil {
		return err
	}
	ops, closeAll, err := zramOps(r, rig, z0)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := r.Interleave(ops, disrupt); err != nil {
		return err
	}
	<-writerDone

	if r.Variant == Correct {
		if !z0.Freed() {
			r.Failf("zram0's private data not freed after its removal")
		}
		if _, err := t.Lookup(z0.Path()); !errors.Is(err, sever.ErrNotExist) {
			r.Failf("lookup %s after its removal: %v, want ENOENT", z0.Path(), err)
		}
	}
	r.Step("zram1 keeps working: echo 64K > disksize, write a page")
	if err := writeAttr(r, z1.Path()+"/disksize", "64K"); err != nil {
		r.Failf("zram1 disksize after zram0's removal: %v", err)
	}
	if err := z1.Disk().Submit(ctx, &blockq.Request{Op: blockq.OpWrite, Data: make([]byte, 4096)}); err != nil {
		r.Failf("zram1 I/O after zram0's removal: %v", err)
	}
	return nil
}

func readAttr(r *Run, path string) error {
	f, err := r.M.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer r.Close("f", f)
	_, err = f.Read(make([]byte, 64))
	return err
}

func writeAttr(r *Run, path, v string) error {
	f, err := r.M.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	defer r.Close("f", f)
	_, err = f.Write([]byte(v + "\n"))
	return err
}
