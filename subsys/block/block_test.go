package block_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/subsys/block"
)

func TestIOUpdatesStat(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 64)
	d := m.addDisk(block.DiskConfig{Name: "ram0", Sectors: 64, Driver: r})
	ctx := ctxT(t)

	w := &blockq.Request{Op: blockq.OpWrite, Sector: 8, Data: bytes.Repeat([]byte("x"), 2*block.SectorSize)}
	if err := d.Submit(ctx, w); err != nil {
		t.Fatalf("write: %v", err)
	}
	rd := &blockq.Request{Op: blockq.OpRead, Sector: 9, Data: sectors(1)}
	for range 3 {
		if err := d.Submit(ctx, rd); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	if rd.Data[0] != 'x' {
		t.Errorf("read back %q; want the written x", rd.Data[0])
	}
	if err := d.Submit(ctx, &blockq.Request{Op: blockq.OpFlush}); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if err := d.Submit(ctx, &blockq.Request{Op: blockq.OpDiscard, Sector: 8, Data: sectors(4)}); err != nil {
		t.Fatalf("discard: %v", err)
	}

	st := d.Stat()
	if st.Read.IOs != 3 || st.Read.Sectors != 3 || st.Write.IOs != 1 || st.Write.Sectors != 2 ||
		st.Discard.IOs != 1 || st.Discard.Sectors != 4 || st.Flush.IOs != 1 {
		t.Errorf("Stat = %+v; want 3 reads of 3 sectors, 1 write of 2, 1 discard of 4, 1 flush", st)
	}
	f := fields(m.read("/block/ram0/stat"))
	if len(f) != 17 {
		t.Fatalf("stat has %d fields; want Linux's 17: %q", len(f), f)
	}
	want := map[int]string{0: "3", 2: "3", 4: "1", 6: "2", 8: "0", 11: "1", 13: "4", 15: "1"}
	for i, v := range want {
		if f[i] != v {
			t.Errorf("stat field %d = %s; want %s (stat: %v)", i+1, f[i], v, f)
		}
	}
	// A refused request is not I/O the disk did.
	d.SetReadOnly(true)
	if err := d.Submit(ctx, w); !errors.Is(err, block.ErrReadOnly) {
		t.Errorf("write to the disk made read-only = %v, want ErrReadOnly", err)
	}
	if got := d.Stat().Write.IOs; got != 1 {
		t.Errorf("write IOs = %d after a refused write; want still 1", got)
	}
	del(t, d, r)
	m.clean()
}

func TestStatCountsRequestsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMachine(t)
		r := newRAM(t, 64)
		r.hold = make(chan struct{})
		d := m.addDisk(block.DiskConfig{Name: "ram0", Sectors: 64, Driver: r, Depth: 2})
		ctx := context.Background()

		rd := submit(ctx, d, blockq.OpRead, 0)
		wr := submit(ctx, d, blockq.OpWrite, 1)
		synctest.Wait() // both are with the driver
		if got := fields(m.read("/block/ram0/inflight")); got[0] != "1" || got[1] != "1" {
			t.Errorf("inflight = %v while a read and a write are with the driver; want [1 1]", got)
		}
		if got := fields(m.read("/block/ram0/stat"))[8]; got != "2" {
			t.Errorf("stat in_flight = %s; want 2", got)
		}
		close(r.hold)
		synctest.Wait()
		if err := ready(t, rd, "read"); err != nil {
			t.Error(err)
		}
		if err := ready(t, wr, "write"); err != nil {
			t.Error(err)
		}
		if st := d.Stat(); st.InFlightReads != 0 || st.InFlightWrites != 0 || st.Read.IOs != 1 || st.Write.IOs != 1 {
			t.Errorf("Stat after completion = %+v; want nothing in flight, one read and one write done", st)
		}
		del(t, d, r)
		m.clean()
	})
}

func TestAttributesReadableThroughKernfs(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 16)
	d := m.addDisk(block.DiskConfig{Name: "sda", Sectors: 16, Driver: r, Depth: 3, LogicalBlockSize: 4096})
	// The one directory, by its three names.
	for _, dir := range []string{"/devices/host0/sda", "/block/sda", "/class/block/sda"} {
		for name, want := range map[string]string{
			"size": "16\n", "ro": "0\n",
			"queue/logical_block_size": "4096\n", "queue/physical_block_size": "4096\n",
			"queue/hw_sector_size": "4096\n", "queue/nr_requests": "3\n", "queue/read_only": "0\n",
		} {
			if got := m.read(dir + "/" + name); got != want {
				t.Errorf("%s/%s = %q; want %q", dir, name, got, want)
			}
		}
	}
	if got := m.read("/block/sda/uevent"); !strings.Contains(got, "DEVTYPE=disk") || !strings.Contains(got, "DEVNAME=sda") {
		t.Errorf("uevent = %q; want DEVTYPE=disk and DEVNAME=sda", got)
	}
	// size is read-only; SetCapacity shows through it and wakes pollers.
	if _, err := m.core.Sysfs().Open("/block/sda/size", os.O_WRONLY); !errors.Is(err, syscall.EACCES) {
		t.Errorf("open size for writing: %v; want EACCES", err)
	}
	f, err := m.core.Sysfs().Open("/block/sda/size", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 64)); err != nil {
		t.Errorf("Read of f = %v, want nil: the data is there to read", err)
	}
	if err := d.SetCapacity(1 << 20); err != nil {
		t.Fatalf("SetCapacity: %v", err)
	}
	if ev, err := f.Poll(); err != nil || ev&sever.EventPri == 0 {
		t.Errorf("Poll of size after SetCapacity = %v, %v; want EventPri", ev, err)
	}
	if got := m.read("/block/sda/size"); got != "1048576\n" {
		t.Errorf("size after SetCapacity = %q; want 1048576", got)
	}
	if err := d.SetCapacity(-1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("SetCapacity(-1) = %v; want EINVAL", err)
	}
	if err := f.Close(); err != nil { // before the audit: an open never closed is a leak
		t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
	}
	del(t, d, r)
	m.clean()
}

func TestSubmitChecksGeometry(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 64)
	d := m.addDisk(block.DiskConfig{Name: "sdb", Sectors: 16, Driver: r, LogicalBlockSize: 1024})
	ctx := ctxT(t)
	for _, c := range []struct {
		rq   *blockq.Request
		want syscall.Errno
	}{
		{&blockq.Request{Op: blockq.OpRead, Sector: 0, Data: sectors(1)}, syscall.EINVAL},  // less than a block
		{&blockq.Request{Op: blockq.OpRead, Sector: 1, Data: sectors(2)}, syscall.EINVAL},  // misaligned start
		{&blockq.Request{Op: blockq.OpWrite, Sector: 0, Data: nil}, syscall.EINVAL},        // empty
		{&blockq.Request{Op: blockq.OpRead, Sector: 14, Data: sectors(4)}, syscall.EIO},    // beyond the end
		{&blockq.Request{Op: blockq.OpRead, Sector: -2, Data: sectors(2)}, syscall.EINVAL}, // negative
		{&blockq.Request{Op: blockq.OpRead, Sector: 14, Data: sectors(2)}, 0},              // the last block
	} {
		err := d.Submit(ctx, c.rq)
		if got := sever.Errno(err); got != c.want {
			t.Errorf("%v of %d bytes at %d: %v (errno %d); want errno %d", c.rq.Op, len(c.rq.Data), c.rq.Sector, err, got, c.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "block: sdb: ") {
			t.Errorf("error %q does not name the disk", err)
		}
	}
	if n := r.calls.Load(); n != 1 {
		t.Errorf("driver called %d times; want once, for the valid request only", n)
	}
	if err := d.SetCapacity(32); err != nil {
		t.Fatal(err)
	}
	if err := d.Submit(ctx, &blockq.Request{Op: blockq.OpRead, Sector: 16, Data: sectors(2)}); err != nil {
		t.Errorf("read past the old end after SetCapacity(32): %v", err)
	}
	del(t, d, r)
	m.clean()
}

func TestReadOnlyRefusesWritesWithEROFS(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	d := m.addDisk(block.DiskConfig{Name: "sdc", Sectors: 8, Driver: r})
	ctx := ctxT(t)

	if err := m.write("/block/sdc/queue/read_only", "1\n"); err != nil {
		t.Fatalf("write 1 to queue/read_only: %v", err)
	}
	if !d.ReadOnly() || m.read("/block/sdc/ro") != "1\n" {
		t.Fatalf("after writing 1: ReadOnly %v, ro %q; want true, 1", d.ReadOnly(), m.read("/block/sdc/ro"))
	}
	for _, op := range []blockq.Op{blockq.OpWrite, blockq.OpDiscard} {
		err := d.Submit(ctx, &blockq.Request{Op: op, Sector: 0, Data: sectors(1)})
		if !errors.Is(err, block.ErrReadOnly) || !errors.Is(err, syscall.EROFS) || sever.Errno(err) != syscall.EROFS {
			t.Errorf("%v to a read-only disk: %v; want ErrReadOnly (EROFS)", op, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "block: sdc: ") {
			t.Errorf("error %q does not name the disk", err)
		}
	}
	if n := r.calls.Load(); n != 0 {
		t.Errorf("driver called %d times for refused writes; want 0", n)
	}
	if err := d.Submit(ctx, &blockq.Request{Op: blockq.OpRead, Data: sectors(1)}); err != nil {
		t.Errorf("read from a read-only disk: %v", err)
	}
	if err := d.Submit(ctx, &blockq.Request{Op: blockq.OpFlush}); err != nil {
		t.Errorf("flush of a read-only disk: %v; an empty flush writes nothing", err)
	}
	if err := m.write("/block/sdc/queue/read_only", "2"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write 2 to queue/read_only: %v; want EINVAL", err)
	}
	if err := m.write("/block/sdc/queue/read_only", "off"); err != nil {
		t.Fatal(err)
	}
	if err := d.Submit(ctx, &blockq.Request{Op: blockq.OpWrite, Data: sectors(1)}); err != nil {
		t.Errorf("write after read_only=off: %v", err)
	}
	del(t, d, r)
	m.clean()
}

// Del's three classes of request, as del_gendisk's: with the driver (runs
// to its end, and Del waits for it), queued (fails with ENODEV, never
// reaches the driver), new (fails at once) — and the driver is never
// called after Del returns.
func TestDelFailsQueuedFinishesInFlightNeverCallsDriverAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMachine(t)
		r := newRAM(t, 8)
		r.hold = make(chan struct{})
		d := m.addDisk(block.DiskConfig{Name: "sdd", Sectors: 8, Driver: r, Depth: 1})
		ctx := context.Background()

		inFlight := submit(ctx, d, blockq.OpWrite, 1)
		synctest.Wait() // with the driver, the only worker
		queued := submit(ctx, d, blockq.OpRead, 2)
		synctest.Wait() // fills the queue
		waiting := submit(ctx, d, blockq.OpRead, 3)
		synctest.Wait() // waits for room

		deleted := make(chan error, 1)
		go func() {
			err := d.Del(ctx)
			r.deleted.Store(true)
			deleted <- err
		}()
		synctest.Wait()
		pending(t, deleted, "Del with a request with the driver")
		// The disk's files go first; its class link, which the device core
		// removes last, dangles until Del returns.
		m.gone("/block/sdd", "/devices/host0/sdd", "/class/block/sdd/size")
		if err := ready(t, waiting, "Submit waiting for room"); !isNoDevice(err) {
			t.Errorf("Submit waiting for room when Del began: %v; want ENODEV", err)
		}
		if err := d.Submit(ctx, &blockq.Request{Op: blockq.OpRead, Data: sectors(1)}); !isNoDevice(err) {
			t.Errorf("Submit during Del: %v; want ENODEV at once", err)
		}

		close(r.hold)
		synctest.Wait()
		if err := ready(t, deleted, "Del once the driver returned"); err != nil {
			t.Fatalf("Del: %v", err)
		}
		if err := ready(t, inFlight, "request with the driver"); err != nil {
			t.Errorf("request with the driver when Del began: %v; want it to finish with nil", err)
		}
		if err := ready(t, queued, "queued request"); !isNoDevice(err) || !strings.HasPrefix(err.Error(), "block: sdd: ") {
			t.Errorf("queued request: %v; want ENODEV naming the disk", err)
		}
		err := d.Submit(ctx, &blockq.Request{Op: blockq.OpRead, Data: sectors(1)})
		if !isNoDevice(err) || !strings.Contains(err.Error(), "sdd") {
			t.Errorf("Submit after Del: %v; want ENODEV naming sdd", err)
		}
		if n := r.calls.Load(); n != 1 {
			t.Errorf("driver called %d times; want once, for the request it had", n)
		}
		m.gone("/class/block/sdd")
		if err := d.SetCapacity(4); !isNoDevice(err) {
			t.Errorf("SetCapacity after Del: %v; want ENODEV", err)
		}
		m.clean()
	})
}

func TestDelIsIdempotentAndConcurrent(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	d := m.addDisk(block.DiskConfig{Name: "sde", Sectors: 8, Driver: r})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- d.Del(ctxT(t)) })
	}
	// Not racing m.parent.Unregister here: device.Unregister closes a
	// child's Removed before the child drops its pin on the parent's
	// shell, so a parent racing its child's Unregister can fail its own
	// reference audit (a device package issue, reported).
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Del/Unregister: %v", err)
		}
	}
	if err := d.Del(ctxT(t)); err != nil {
		t.Errorf("Del of a deleted disk: %v; want nil", err)
	}
	if err := m.parent.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister of the parent of a deleted disk: %v", err)
	}
	m.clean()
}

// Racing submitters against Del: every Submit returns nil or ENODEV, and
// the driver is never running once Del has returned.
func TestDelRacesSubmitters(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			m := newMachine(t)
			r := newRAM(t, 64)
			d := m.addDisk(block.DiskConfig{Name: "sdf", Sectors: 64, Driver: r, Depth: 2})
			ctx := ctxT(t)
			var wg sync.WaitGroup
			for g := range 6 {
				wg.Go(func() {
					rq := &blockq.Request{Op: blockq.Op(g % 2), Sector: int64(g), Data: sectors(1)}
					for {
						err := d.Submit(ctx, rq)
						if isNoDevice(err) {
							return
						}
						if err != nil {
							t.Errorf("Submit racing Del: %v; want nil or ENODEV", err)
							return
						}
					}
				})
			}
			wg.Go(func() {
				// A reader racing Del either reads the stat or finds it gone.
				f, err := m.core.Sysfs().Open("/block/sdf/stat", os.O_RDONLY)
				if err != nil {
					if !isNotExist(err) {
						t.Errorf("Open stat racing Del: %v; want nil or ENOENT", err)
					}
					return
				}
				defer func() {
					if err := f.Close(); err != nil {
						t.Errorf("Close of stat racing Del: %v; want nil (a first Close succeeds)", err)
					}
				}()
				if _, err := f.Read(make([]byte, 256)); err != nil && !isNoDevice(err) {
					t.Errorf("Read stat racing Del: %v; want nil or ENODEV", err)
				}
			})
			del(t, d, r)
			wg.Wait()
			m.clean()
		})
	}
}

// zram's reset: an attribute of the disk whose Store deletes the disk. It
// must not deadlock on its own write (seed 001).
func TestDelFromOwnAttributeStoreDoesNotDeadlock(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	var resetErr error
	reset := block.Attr{Name: "reset", Parse: kernfs.Bool(), Store: func(c *kernfs.Call, d *block.Disk, v any) error {
		if !v.(bool) {
			return nil
		}
		resetErr = d.DelSelf(context.Background(), c) // Background: a deadlock would hang, and the test time out
		r.deleted.Store(true)
		return nil
	}}
	d := m.addDisk(block.DiskConfig{Name: "zram0", Sectors: 8, Driver: r, Attrs: []block.Attr{reset}})
	if err := d.Submit(ctxT(t), &blockq.Request{Op: blockq.OpWrite, Data: sectors(1)}); err != nil {
		t.Fatal(err)
	}
	// A reader keeps the stat file open across the reset.
	stat, err := m.core.Sysfs().Open("/block/zram0/stat", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- m.write("/block/zram0/reset", "1\n") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write 1 to reset: %v", err)
		}
	case <-ctxT(t).Done():
		t.Fatal("write to reset deadlocked: DelSelf waited for its own Store")
	}
	if resetErr != nil {
		t.Errorf("DelSelf: %v", resetErr)
	}
	if !d.Deleted() || d.Device().State() != device.StateRemoved {
		t.Errorf("after reset: Deleted %v, device %v; want the disk deleted", d.Deleted(), d.Device().State())
	}
	m.gone("/block/zram0", "/devices/host0/zram0", "/block/zram0/reset")
	if _, err := stat.Read(make([]byte, 64)); !isNoDevice(err) {
		t.Errorf("read of stat opened before the reset: %v; want ENODEV", err)
	}
	if err := stat.Close(); err != nil {
		t.Errorf("Close of stat = %v, want nil: a first Close succeeds", err)
	}
	if err := d.Submit(ctxT(t), &blockq.Request{Op: blockq.OpRead, Data: sectors(1)}); !isNoDevice(err) {
		t.Errorf("Submit after reset: %v; want ENODEV", err)
	}
	if err := d.Del(ctxT(t)); err != nil {
		t.Errorf("Del after reset: %v; want nil", err)
	}
	// The name is free again: the driver can make a fresh zram0.
	d2 := m.addDisk(block.DiskConfig{Name: "zram0", Sectors: 8, Driver: r})
	r.deleted.Store(false)
	del(t, d2, r)
	m.clean()
}

// Two resets racing, and a Del racing them: one deletion, no deadlock,
// every writer returns.
func TestConcurrentResetsAndDel(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	reset := block.Attr{Name: "reset", Store: func(c *kernfs.Call, d *block.Disk, v any) error {
		return d.DelSelf(ctxT(t), c)
	}}
	d := m.addDisk(block.DiskConfig{Name: "zram1", Sectors: 8, Driver: r, Attrs: []block.Attr{reset}})
	var files []*kernfs.File
	for range 3 {
		f, err := m.core.Sysfs().Open("/block/zram1/reset", os.O_WRONLY)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Go(func() {
			// A writer that came too late finds its file severed.
			if _, err := f.Write([]byte("1")); err != nil && !isNoDevice(err) {
				t.Errorf("write to reset: %v; want nil or ENODEV", err)
			}
		})
	}
	wg.Go(func() {
		if err := d.Del(ctxT(t)); err != nil {
			t.Errorf("Del racing resets: %v", err)
		}
	})
	wg.Wait()
	for _, f := range files {
		if err := f.Close(); err != nil {
			t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
		}
	}
	m.gone("/block/zram1")
	m.clean()
}

func TestUnregisterOfParentRemovesDisk(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	d := m.addDisk(block.DiskConfig{Name: "sdg", Sectors: 8, Driver: r})
	t1 := m.core.Sysfs()
	stat, err := t1.Open("/block/sdg/stat", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := t1.Open("/devices/host0/sdg/queue/read_only", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}

	if err := m.parent.Unregister(ctxT(t)); err != nil {
		t.Fatalf("Unregister host0: %v", err)
	}
	r.deleted.Store(true)
	if !d.Deleted() {
		t.Error("disk not deleted by its parent's Unregister")
	}
	m.gone("/devices/host0/sdg", "/devices/host0/sdg/size", "/devices/host0/sdg/queue",
		"/block/sdg", "/block/sdg/stat", "/class/block/sdg")
	if _, err := stat.Read(make([]byte, 64)); !isNoDevice(err) {
		t.Errorf("read of an open stat file: %v; want ENODEV", err)
	}
	if _, err := ro.Write([]byte("1")); !isNoDevice(err) {
		t.Errorf("write of an open queue/read_only file: %v; want ENODEV", err)
	}
	if ev, _ := stat.Poll(); ev&sever.EventHup == 0 {
		t.Errorf("Poll of a severed file = %v; want EventHup", ev)
	}
	if err := d.Submit(ctxT(t), &blockq.Request{Op: blockq.OpRead, Data: sectors(1)}); !isNoDevice(err) {
		t.Errorf("Submit after the parent was unregistered: %v; want ENODEV", err)
	}
	if err := stat.Close(); err != nil {
		t.Errorf("Close of a severed file: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Errorf("Close of a severed file: %v", err)
	}
	m.clean()
}

// A disk created in Probe belongs to the binding: unbinding deletes it
// before the driver's Remove runs, and the driver can then free its state.
func TestDiskCreatedInProbeIsDeletedBeforeRemove(t *testing.T) {
	m := newMachine(t)
	bus, err := m.core.NewBus(device.BusConfig{Name: "scsi"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRAM(t, 8)
	var disk *block.Disk
	var removeSaw error
	drv := &device.Driver{
		Name: "sd", IDs: []string{"scsi-disk"},
		Probe: func(ctx context.Context, dev *device.Device) error {
			var err error
			disk, err = block.AddDisk(ctx, dev, block.DiskConfig{Name: "sdh", Sectors: 8, Driver: r})
			return err
		},
		Remove: func(ctx context.Context, dev *device.Device) {
			r.deleted.Store(true) // the driver frees its state here
			removeSaw = disk.Submit(ctx, &blockq.Request{Op: blockq.OpRead, Data: sectors(1)})
		},
	}
	if err := bus.RegisterDriver(ctxT(t), drv); err != nil {
		t.Fatal(err)
	}
	sdev, err := m.core.Register(ctxT(t), device.Config{Name: "0:0:0:0", Parent: m.parent, Bus: bus, Compatible: "scsi-disk"})
	if err != nil {
		t.Fatal(err)
	}
	if disk == nil {
		t.Fatal("Probe did not run")
	}
	if got := m.read("/block/sdh/size"); got != "8\n" {
		t.Errorf("size = %q", got)
	}
	if err := sdev.Unbind(ctxT(t)); err != nil {
		t.Fatalf("Unbind: %v", err)
	}
	if !isNoDevice(removeSaw) {
		t.Errorf("Submit from Remove: %v; want ENODEV — the disk must be deleted before Remove", removeSaw)
	}
	m.gone("/block/sdh", "/devices/host0/0:0:0:0/sdh")
	// Bind again: a fresh disk of the same name.
	r.deleted.Store(false)
	if err := sdev.Bind(ctxT(t), drv); err != nil {
		t.Fatalf("Bind again: %v", err)
	}
	if err := disk.Submit(ctxT(t), &blockq.Request{Op: blockq.OpRead, Data: sectors(1)}); err != nil {
		t.Errorf("Submit to the rebound disk: %v", err)
	}
	if err := m.core.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	m.clean()
}

func TestDiskNamesAreUniquePerMachine(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	d := m.addDisk(block.DiskConfig{Name: "vda", Sectors: 8, Driver: r})
	other, err := m.core.Register(ctxT(t), device.Config{Name: "host1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = block.AddDisk(ctxT(t), other, block.DiskConfig{Name: "vda", Sectors: 8, Driver: r})
	if !errors.Is(err, syscall.EEXIST) || !strings.Contains(err.Error(), "vda") {
		t.Errorf("second vda on one machine: %v; want EEXIST naming vda", err)
	}
	// Another machine has its own names.
	m2 := newMachine(t)
	d2 := m2.addDisk(block.DiskConfig{Name: "vda", Sectors: 8, Driver: r})
	del(t, d2, r)
	r.deleted.Store(false)
	del(t, d, r)
	m.clean()
	m2.clean()
}

func TestAddDiskRejectsBadConfig(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	for _, cfg := range []block.DiskConfig{
		{Name: "", Driver: r},
		{Name: "a/b", Driver: r},
		{Name: "x"},
		{Name: "x", Driver: r, Sectors: -1},
		{Name: "x", Driver: r, Depth: -1},
		{Name: "x", Driver: r, LogicalBlockSize: 1000},
		{Name: "x", Driver: r, LogicalBlockSize: 256},
		{Name: "x", Driver: r, LogicalBlockSize: 8192},
	} {
		if _, err := block.AddDisk(ctxT(t), m.parent, cfg); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("AddDisk(%+v) = %v; want EINVAL", cfg, err)
		}
	}
	if _, err := block.AddDisk(ctxT(t), nil, block.DiskConfig{Name: "x", Driver: r}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("AddDisk with no parent = %v; want EINVAL", err)
	}
	if err := m.parent.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister of parent = %v, want nil: nothing is stuck in the driver", err)
	}
	if _, err := block.AddDisk(ctxT(t), m.parent, block.DiskConfig{Name: "x", Driver: r}); !isNoDevice(err) {
		t.Errorf("AddDisk under a removed parent = %v; want ENODEV", err)
	}
	m.clean()
}

// The disk pins its driver's owner: UnloadTry is refused while it exists,
// UnloadForce deletes it first.
func TestOwnerUnloadDeletesDisk(t *testing.T) {
	m := newMachine(t)
	r := newRAM(t, 8)
	owner := sever.NewOwner("zram", nil, sever.WithLog(m.log))
	d := m.addDisk(block.DiskConfig{Name: "zram2", Sectors: 8, Driver: r, Owner: owner})
	if err := owner.Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("UnloadTry with a disk: %v; want EBUSY", err)
	}
	if err := owner.Unload(ctxT(t), sever.UnloadForce); err != nil {
		t.Fatalf("UnloadForce: %v", err)
	}
	r.deleted.Store(true)
	if !d.Deleted() {
		t.Error("disk survived its owner's unload")
	}
	m.gone("/block/zram2")
	if err := d.Submit(ctxT(t), &blockq.Request{Op: blockq.OpRead, Data: sectors(1)}); !isNoDevice(err) {
		t.Errorf("Submit after the owner unloaded: %v; want ENODEV", err)
	}
	if _, err := block.AddDisk(ctxT(t), m.parent, block.DiskConfig{Name: "zram3", Driver: r, Owner: owner}); !isNoDevice(err) {
		t.Errorf("AddDisk with a gone owner: %v; want ENODEV", err)
	}
	m.clean()
}

// The checker notices a driver that ignores the contract: a panic fails
// the request with EIO and is recorded.
func TestDriverPanicIsRecorded(t *testing.T) {
	m := newMachine(t)
	d := m.addDisk(block.DiskConfig{Name: "bad0", Sectors: 8, Driver: blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		panic("driver bug")
	})})
	err := d.Submit(ctxT(t), &blockq.Request{Op: blockq.OpRead, Data: sectors(1)})
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("Submit to a panicking driver: %v; want EIO", err)
	}
	if err := d.Del(ctxT(t)); err != nil {
		t.Errorf("Del of d = %v, want nil: nothing is stuck in the driver", err)
	}
	if n := m.log.Count(check.DriverFault); n != 1 {
		t.Errorf("DriverFault recorded %d times; want 1", n)
	}
}
