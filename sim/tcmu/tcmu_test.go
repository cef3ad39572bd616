package tcmu_test

import (
	"context"
	"errors"
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
// device destroyed, a read (EIO), a last touch of the mapping, close.
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
	if err := tgt.Owner().Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmmod --try while mapped: %v, want EBUSY", err)
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
	for _, mod := range []string{tcmu.ModuleName, tcmu.UIOModule} {
		if err := m.Rmmod(ctxT(t), mod); err != nil {
			t.Errorf("rmmod %s after the daemon let go: %v", mod, err)
		}
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
