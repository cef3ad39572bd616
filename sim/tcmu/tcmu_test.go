package tcmu_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/tcmu"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// daemon runs tcmu-runner through an unregistration: one command, the
// device destroyed, a read (EIO), rmmod target_core_user (which succeeds:
// nothing of its code is in use), a last touch of the mapping, close.
func daemon(t *testing.T, bugs tcmu.Bugs) (*sim.Machine, *tcmu.Target, *tcmu.Dev) {
	m := sim.New(t.Name())
	tgt, err := tcmu.Load(ctxT(t), m, bugs)
	if err != nil {
		t.Fatal(err)
	}
	d, err := tgt.Create(ctxT(t), "tcmu0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.OpenRunner()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Queue(); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Wait(ctxT(t)); n != 1 || err != nil {
		t.Fatalf("runner read = %d, %v; want 1", n, err)
	}
	if err := r.Touch("process the command"); err != nil {
		t.Errorf("the daemon's touch of its own mapping: %v", err)
	}
	if err := tgt.Destroy(ctxT(t), d); err != nil {
		t.Fatal(err)
	}
	if err := d.Queue(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Queue after unregister: %v, want ENODEV", err)
	}
	if _, err := r.Wait(ctxT(t)); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after unregister: %v, want EIO", err)
	}
	if err := m.Unload(ctxT(t), tcmu.ModuleName, sever.UnloadTry); err != nil {
		t.Errorf("rmmod --try target_core_user with only the daemon's open and mapping of the destroyed device left: %v, want nil", err)
	}
	if err := r.Touch("finish the last command"); err != nil {
		t.Errorf("touch after unregister: %v; the mapping must stay valid", err)
	}
	r.Close()
	return m, tgt, d
}

func TestRegionKeepsPagesUntilLastUnmapAndFreesThemOnce(t *testing.T) {
	m, _, d := daemon(t, 0)
	if d.Frees() != 1 || d.Releases() != 1 {
		t.Errorf("data area freed %d times, released %d times; want 1 and 1", d.Frees(), d.Releases())
	}
	if err := m.Rmmod(ctxT(t), tcmu.UIOModule); err != nil {
		t.Errorf("rmmod uio after the daemon let go: %v", err)
	}
	vs, err := m.Quiesce(ctxT(t))
	if err != nil || len(vs) != 0 {
		t.Errorf("quiesce: %v, violations %v", err, vs)
	}
}

func TestUIOCannotUnloadUnderTheDriver(t *testing.T) {
	m := sim.New(t.Name())
	if _, err := tcmu.Load(ctxT(t), m, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Rmmod(ctxT(t), tcmu.UIOModule); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmmod uio with target_core_user loaded: %v, want EBUSY", err)
	}
	if vs, err := m.Quiesce(ctxT(t)); err != nil || len(vs) != 0 {
		t.Errorf("quiesce: %v, violations %v", err, vs)
	}
}

func TestNaiveFreeAtUnregisterIsUseAfterFree(t *testing.T) {
	m, _, _ := daemon(t, tcmu.BugFreeAtUnregister)
	if _, err := m.Quiesce(ctxT(t)); err != nil {
		t.Logf("quiesce of the naive machine: %v", err) // the verdict is the log's
	}
	if n := m.Log().Count(check.UseAfterFree); n != 1 {
		t.Errorf("use after free recorded %d times, want 1: the daemon's last touch of pages freed at unregister", n)
	}
}

// Rule (the report behind it: echo force > sys/module/target_core_user/unload
// blocked until tcmu-runner closed dev/uio0): a forced unload of the
// driver's module while the daemon holds the uio device open and mapped,
// busy elsewhere, returns without waiting for it. The daemon's read then
// fails with EIO, its mapping stays valid, no tcmu callback runs after the
// unload, and the framework frees the data area once, at the daemon's
// unmap and close.
func TestForceUnloadWithTheDaemonHoldingUIOReturnsPromptly(t *testing.T) {
	m := sim.New(t.Name())
	tgt, err := tcmu.Load(ctxT(t), m, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := tgt.Create(ctxT(t), "tcmu0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.OpenRunner()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Queue(); err != nil {
		t.Fatal(err)
	}
	// The daemon is busy elsewhere: nobody reads, unmaps or closes.
	done := make(chan error, 1)
	go func() { done <- writeAttr(m, "/module/"+tcmu.ModuleName+"/unload", "force\n") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("echo force > /module/%s/unload with uio0 open and mapped: %v", tcmu.ModuleName, err)
		}
	case <-time.After(5 * time.Second): // far beyond what the unload needs
		t.Fatalf("echo force > /module/%s/unload still blocked after 5s: it waits for the daemon to close uio0", tcmu.ModuleName)
	}
	if st := tgt.Owner().State(); st != sever.OwnerGone {
		t.Fatalf("%s is %v after the forced unload, want gone", tcmu.ModuleName, st)
	}
	if _, err := m.Sysfs().Lookup("/module/" + tcmu.ModuleName); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the module's directory after the unload: %v, want ENOENT", err)
	}
	releases := d.Releases()
	if _, err := r.Wait(ctxT(t)); !errors.Is(err, syscall.EIO) {
		t.Errorf("the daemon's read after the unload: %v, want EIO", err)
	}
	if err := r.Touch("finish the command in flight"); err != nil {
		t.Errorf("touch after the unload: %v; the mapping must stay valid", err)
	}
	if d.Frees() != 0 {
		t.Error("data area freed while the daemon still maps it")
	}
	r.Close()
	if d.Frees() != 1 {
		t.Errorf("data area freed %d times at the daemon's unmap and close, want 1", d.Frees())
	}
	if d.Releases() != releases || releases != 1 {
		t.Errorf("uio release ran %d times by the unload and %d after; want once, at the unload", releases, d.Releases()-releases)
	}
	if err := m.Rmmod(ctxT(t), tcmu.UIOModule); err != nil {
		t.Errorf("rmmod uio: %v", err)
	}
	if vs, err := m.Quiesce(ctxT(t)); err != nil || len(vs) != 0 {
		t.Errorf("quiesce: %v, violations %v (a call into the gone module would be one)", err, vs)
	}
}

func writeAttr(m *sim.Machine, path, s string) error {
	f, err := m.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(s))
	return errors.Join(err, f.Close())
}
