package kernfs_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
)

// Rule: unloading an owner removes every node it backs first — running
// Release for the files open on them, without waiting for them to close —
// and nothing calls into it afterwards.
func TestOwnerUnloadWithOpenFilesRemovesItsNodesFirst(t *testing.T) {
	tr, log := checked(t)
	var exited atomic.Bool
	drv := sever.NewOwner("gpio_cp2112", func() { exited.Store(true) }, sever.WithLog(log))
	c := &counter{}
	_, val := device(t, tr, "gpiochip0", drv, c)
	f1 := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDONLY))
	f2 := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDWR))
	readAll(t, f1)

	if err := drv.Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("UnloadTry with open files: %v, want EBUSY (open files pin the owner)", err)
	}
	if err := drv.Unload(ctxT(t), sever.UnloadForce); err != nil {
		t.Fatalf("UnloadForce with open files: %v; it must not wait for them to close", err)
	}
	if !exited.Load() {
		t.Fatal("owner's exit did not run")
	}
	c.checkReleases(t)
	if _, err := tr.Lookup("/devices/gpiochip0"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("owner's directory survived its unload: %v", err)
	}
	if _, err := f1.Read(make([]byte, 4)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Read on a file of an unloaded owner: %v, want ENODEV", err)
	}
	closeOK(t, f1)
	closeOK(t, f2)
	if n := log.Count(check.CallIntoGoneOwner); n != 0 {
		t.Errorf("%d calls into the unloaded owner", n)
	}
	if _, err := tr.AddAttr(tr.Root(), c.attr("late", drv)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("AddAttr backed by a gone owner: %v, want ENODEV", err)
	}
}

// Rule (seed 004, Example 2): an open file pins its attribute's own owner,
// not its directory's. scsi_mod's "delete" sits under libata's host: the
// open keeps scsi_mod, and libata can still unload, severing the file.
func TestOpenPinsAttributesOwnOwnerNotItsDirectorys(t *testing.T) {
	tr, log := checked(t)
	libata := sever.NewOwner("libata", nil, sever.WithLog(log))
	scsi := sever.NewOwner("scsi_mod", nil, sever.WithLog(log))
	host := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "host0", Owner: libata}))
	del := must[*kernfs.Node](t)(tr.AddAttr(host, kernfs.Attr{
		Name: "delete", Owner: scsi,
		Store: func(*kernfs.Call, any) error { return nil },
	}))
	f := must[*kernfs.File](t)(tr.OpenNode(del, os.O_WRONLY)) // cat > delete &
	if scsi.Pins() != 1 || libata.Pins() != 0 {
		t.Fatalf("open pinned scsi_mod %d times and libata %d times; want the attribute's owner (scsi_mod) once",
			scsi.Pins(), libata.Pins())
	}
	if err := scsi.Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmmod scsi_mod with delete open: %v, want EBUSY", err)
	}
	if err := libata.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Fatalf("rmmod libata: %v; nothing of libata's is open", err)
	}
	if !del.Removed() {
		t.Fatal("unloading libata left its directory's attributes in place")
	}
	if scsi.Pins() != 0 {
		t.Errorf("scsi_mod still pinned %d times after its attribute was severed", scsi.Pins())
	}
	if _, err := f.Write([]byte("1")); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("write to severed delete: %v, want ENODEV", err)
	}
	if err := scsi.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("rmmod scsi_mod after the sever: %v", err)
	}
	if err := f.Close(); err != nil { // kill %%: calls nothing into either module
		t.Errorf("Close of f = %v, want nil: a first Close succeeds", err)
	}
	if !log.Clean() {
		t.Errorf("checker: %v", log.Violations())
	}
}

// Rule (seed 004, Example 1): a scheduled callback pins its owner until it
// has run; the owner's unload waits for it. Scheduling on an unloading
// owner is refused and says so.
func TestScheduleCallbackPinsOwnerUntilItRuns(t *testing.T) {
	tr, log := checked(t)
	scsi := sever.NewOwner("scsi_mod", nil, sever.WithLog(log))
	gate := make(chan struct{})
	var ran atomic.Bool
	dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "sda"}))
	must[*kernfs.Node](t)(tr.AddAttr(dir, kernfs.Attr{
		Name: "delete", Owner: scsi,
		Store: func(c *kernfs.Call, _ any) error {
			return c.ScheduleCallback(func() {
				<-gate // msleep(100)
				ran.Store(true)
			})
		},
	}))
	f := must[*kernfs.File](t)(tr.Open("/sda/delete", os.O_WRONLY))
	if _, err := f.Write([]byte("1")); err != nil {
		t.Fatal(err)
	}
	closeOK(t, f)
	unloaded := make(chan error)
	go func() { unloaded <- scsi.Unload(ctxT(t), sever.UnloadForce) }()
	select {
	case err := <-unloaded:
		t.Fatalf("owner unloaded (%v) while its scheduled callback had not run", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	if err := <-unloaded; err != nil {
		t.Fatal(err)
	}
	if !ran.Load() {
		t.Error("callback did not run before the unload finished")
	}
	n2 := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "sdb"}))
	going := sever.NewOwner("going", nil, sever.WithLog(log))
	attr := must[*kernfs.Node](t)(tr.AddAttr(n2, kernfs.Attr{Name: "x", Owner: going, Show: func(_ *kernfs.Call, b []byte) ([]byte, error) { return b, nil }}))
	if err := going.Unload(ctxT(t), sever.UnloadForce); err != nil {
		t.Fatal(err)
	}
	if err := tr.ScheduleCallback(attr, func() { t.Error("callback of a gone owner ran") }); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("ScheduleCallback on an unloaded owner: %v, want ENODEV", err)
	}
}

// The checker proves itself: a deliberately broken provider — Example 1's
// naive sysfs_schedule_callback, a goroutine that pins nothing — calls into
// its owner after the unload, and the log says so.
func TestCheckerReportsCallIntoGoneOwnerFromBrokenProvider(t *testing.T) {
	tr, log := checkedAllowing(t, check.CallIntoGoneOwner)
	scsi := sever.NewOwner("scsi_mod", nil, sever.WithLog(log))
	gate := make(chan struct{})
	done := make(chan struct{})
	dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "sda"}))
	must[*kernfs.Node](t)(tr.AddAttr(dir, kernfs.Attr{
		Name: "delete", Owner: scsi,
		Store: func(*kernfs.Call, any) error {
			go func() { // broken: not ScheduleCallback, so scsi_mod is not pinned
				defer close(done)
				<-gate
				scsi.Call("scsi_remove_device", func() {})
			}()
			return nil
		},
	}))
	f := must[*kernfs.File](t)(tr.Open("/sda/delete", os.O_WRONLY))
	if _, err := f.Write([]byte("1")); err != nil {
		t.Errorf("Write of f = %v, want nil: the value is valid", err)
	}
	closeOK(t, f)
	if err := scsi.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Fatalf("unload: %v", err)
	}
	close(gate)
	<-done
	if n := log.Count(check.CallIntoGoneOwner); n != 1 {
		t.Fatalf("checker recorded %d calls into the gone owner, want 1: %v", n, log.Violations())
	}
	if got := log.Violations()[0].Object; got != "scsi_mod" {
		t.Errorf("violation names %q, want scsi_mod", got)
	}
}

// Rule: a provider that panics is recorded as a driver fault and the
// operation fails with EIO; the tree stays usable.
func TestProviderPanicIsRecordedAsDriverFault(t *testing.T) {
	tr, log := checkedAllowing(t, check.DriverFault)
	must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{
		Name: "boom",
		Show: func(*kernfs.Call, []byte) ([]byte, error) { panic("oops") },
	}))
	f := must[*kernfs.File](t)(tr.Open("/boom", os.O_RDONLY))
	defer closeOK(t, f)
	if _, err := f.Read(make([]byte, 4)); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a panicking Show: %v, want EIO", err)
	}
	if n := log.Count(check.DriverFault); n != 1 {
		t.Errorf("%d driver faults recorded, want 1", n)
	}
	if err := tr.Remove(context.Background(), must[*kernfs.Node](t)(tr.Lookup("/boom"))); err != nil {
		t.Errorf("Remove after a fault: %v (the access must have been exited)", err)
	}
}
