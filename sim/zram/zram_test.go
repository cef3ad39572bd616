package zram_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/zram"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func write(t *testing.T, m *sim.Machine, path, v string) error {
	t.Helper()
	f, err := m.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	defer closeOK(t, f)
	_, err = f.Write([]byte(v + "\n"))
	return err
}

func read(t *testing.T, m *sim.Machine, path string) (string, error) {
	t.Helper()
	f, err := m.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer closeOK(t, f)
	buf := make([]byte, 256)
	n, err := f.Read(buf)
	return string(buf[:n]), err
}

func quiesce(t *testing.T, m *sim.Machine) []check.Violation {
	t.Helper()
	vs, err := m.Quiesce(ctxT(t))
	if err != nil {
		t.Errorf("quiesce: %v", err)
	}
	return vs
}

func clean(t *testing.T, m *sim.Machine) {
	t.Helper()
	for _, v := range quiesce(t, m) {
		t.Errorf("contract violation: %v", v)
	}
}

func TestAttributesConfigureTheDiskAndRefuseChangesOnceSized(t *testing.T) {
	m := sim.New(t.Name())
	mod, err := zram.Load(ctxT(t), m, zram.Config{})
	if err != nil {
		t.Fatal(err)
	}
	z := mod.Device(0)
	if err := write(t, m, z.Path()+"/comp_algorithm", "zstd"); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, m, z.Path()+"/comp_algorithm"); got != "lzo lzo-rle lz4 [zstd]\n" {
		t.Errorf("comp_algorithm = %q, want zstd selected", got)
	}
	if err := write(t, m, z.Path()+"/disksize", "64K"); err != nil {
		t.Fatal(err)
	}
	if got := z.Disk().Capacity(); got != 128 {
		t.Errorf("capacity after disksize=64K: %d sectors, want 128", got)
	}
	if err := write(t, m, z.Path()+"/disksize", "1M"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second disksize: %v, want EBUSY", err)
	}
	if err := write(t, m, z.Path()+"/comp_algorithm", "lz4"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("comp_algorithm on a sized disk: %v, want EBUSY", err)
	}
	clean(t, m)
}

func TestResetRemovesItsOwnDiskAndFreesItsDataOnce(t *testing.T) {
	m := sim.New(t.Name())
	mod, err := zram.Load(ctxT(t), m, zram.Config{})
	if err != nil {
		t.Fatal(err)
	}
	z := mod.Device(0)
	held, err := m.Sysfs().Open(z.Path()+"/disksize", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- write(t, m, z.Path()+"/reset", "1") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("echo 1 > reset: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reset deadlocked on its own Store")
	}
	if !z.Freed() || mod.Device(0) != nil {
		t.Errorf("after reset: private data freed %v, index still held %v", z.Freed(), mod.Device(0) != nil)
	}
	if _, err := held.ReadAt(make([]byte, 16), 0); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("disksize held open across reset: %v, want ENODEV", err)
	}
	if _, err := read(t, m, z.Path()+"/disksize"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("open disksize after reset: %v, want ENOENT", err)
	}
	// hot_add reuses the index.
	if got, err := read(t, m, mod.ControlPath()+"/hot_add"); err != nil || got != "0\n" {
		t.Errorf("hot_add after reset = %q, %v; want 0", got, err)
	}
	closeOK(t, held) // before the audit: an open never closed is a leak
	clean(t, m)
}

func TestUnloadTryIsRefusedWhileADiskOrAFileHoldsTheModule(t *testing.T) {
	m := sim.New(t.Name())
	mod, err := zram.Load(ctxT(t), m, zram.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := mod.Owner().Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmmod --try with zram0 present: %v, want EBUSY", err)
	}
	if err := write(t, m, mod.ControlPath()+"/hot_remove", "0"); err != nil {
		t.Fatal(err)
	}
	f, err := m.Sysfs().Open(mod.ControlPath()+"/hot_add", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := mod.Owner().Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmmod --try with no disk but hot_add open: %v, want EBUSY", err)
	}
	if err := m.Rmmod(ctxT(t), zram.ModuleName); err != nil {
		t.Errorf("rmmod (force) with hot_add open: %v, want nil", err)
	}
	if _, err := f.Read(make([]byte, 8)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("hot_add held open across rmmod: %v, want ENODEV", err)
	}
	closeOK(t, f)
	clean(t, m)
}

// The naive exit deletes zram0 under zram_index_mutex while a Store waits
// for that lock: the drain misses the hung-task deadline and the checker
// names the attribute and, with tracking, the write that holds it. Killing
// the writer lets rmmod finish.
func TestNaiveExitHoldingTheLockIsASeverTimeoutNamingTheStore(t *testing.T) {
	m := sim.New(t.Name(), sim.WithTracking())
	inside := make(chan struct{})
	delay := func(ctx context.Context, z *zram.Zram, attr string) {
		close(inside)
		for !z.Disk().Deleted() && ctx.Err() == nil {
			time.Sleep(50 * time.Microsecond)
		}
	}
	mod, err := zram.Load(ctxT(t), m, zram.Config{Bugs: zram.BugExitHoldsLock, StoreDelay: delay, HungTaskTimeout: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	z := mod.Device(0)
	f, err := m.Sysfs().Open(z.Path()+"/comp_algorithm", os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, f)
	wctx, kill := context.WithCancel(ctxT(t))
	defer kill()
	wrote := make(chan error, 1)
	go func() { _, err := f.WriteAtContext(wctx, []byte("zstd\n"), 0); wrote <- err }()
	<-inside
	m.Log().Observe(func(v check.Violation) {
		if v.Class == check.SeverTimeout {
			kill() // the operator kills the stuck writer
		}
	})
	if err := mod.Owner().Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("naive rmmod --try: %v; want it to go through (nothing pins the module)", err)
	}
	if err := <-wrote; !errors.Is(err, context.Canceled) {
		t.Errorf("stuck write: %v, want it killed", err)
	}
	vs := quiesce(t, m)
	var found bool
	for _, v := range vs {
		if v.Class == check.SeverTimeout && strings.HasSuffix(v.Object, "/zram0/comp_algorithm") {
			found = true
			if len(v.Holders) != 1 || !strings.Contains(v.Holders[0], "WriteAtContext") {
				t.Errorf("SeverTimeout holders = %q, want the write of comp_algorithm", v.Holders)
			}
		}
	}
	if !found {
		t.Errorf("no SeverTimeout naming comp_algorithm; violations: %v", vs)
	}
}

// closeOK closes c and fails the test if Close does: a file's first Close
// succeeds, whether or not its device is gone.
func closeOK(t testing.TB, c interface{ Close() error }) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
