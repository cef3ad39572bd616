package sim_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
)

func quiesce(t *testing.T, m *sim.Machine) []check.Violation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs, err := m.Quiesce(ctx)
	if err != nil {
		t.Errorf("quiesce %s: %v", m.Name(), err)
	}
	return vs
}

func TestTwoMachinesShareNothing(t *testing.T) {
	a, b := sim.New("a"), sim.New("b")
	for _, m := range []*sim.Machine{a, b} {
		if _, err := m.Insmod("cp2112", nil); err != nil {
			t.Fatalf("insmod cp2112 on %s: %v", m.Name(), err)
		}
		if _, err := m.Sysfs().AddDir(m.Sysfs().Root(), kernfs.Dir{Name: "only-here"}); err != nil {
			t.Fatalf("%s: %v", m.Name(), err)
		}
	}
	if a.Module("cp2112") == b.Module("cp2112") {
		t.Error("two machines share a module")
	}
	a.Log().Record(check.Violation{Class: check.DriverFault, Object: "a only"})
	if !b.Log().Clean() {
		t.Error("a violation on machine a was recorded on machine b")
	}
	if sim.Of(a.Core()) != a || sim.Of(b.Core()) != b {
		t.Error("Of does not find each machine from its core")
	}
	if vs := quiesce(t, a); len(vs) != 1 {
		t.Errorf("machine a: %d violations, want its one", len(vs))
	}
	if vs := quiesce(t, b); len(vs) != 0 {
		t.Errorf("machine b: %v, want none", vs)
	}
}

func TestRmmodRefusesWhileAnotherModuleDependsOnIt(t *testing.T) {
	m := sim.New("m")
	ctx := context.Background()
	if _, err := m.Insmod("scsi_mod", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Insmod("sd_mod", nil, "scsi_mod"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Insmod("ahci", nil, "libata"); !errors.Is(err, sever.ErrNotExist) {
		t.Errorf("insmod ahci without libata: %v, want ENOENT", err)
	}
	if err := m.Rmmod(ctx, "scsi_mod"); !errors.Is(err, sever.ErrBusy) {
		t.Errorf("rmmod scsi_mod under sd_mod: %v, want EBUSY", err)
	}
	if err := m.Rmmod(ctx, "sd_mod"); err != nil {
		t.Fatal(err)
	}
	if err := m.Rmmod(ctx, "scsi_mod"); err != nil {
		t.Errorf("rmmod scsi_mod after sd_mod: %v", err)
	}
	if st := m.Modules()["scsi_mod"]; st != sever.OwnerGone {
		t.Errorf("scsi_mod is %v after rmmod", st)
	}
	if vs := quiesce(t, m); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
}

func TestQuiesceReportsWhatOutlivedItsProvider(t *testing.T) {
	m := sim.New("m")
	tr := m.Sysfs()
	irqDir, _ := tr.AddDir(tr.Root(), kernfs.Dir{Name: "irq"})
	n, _ := tr.AddDir(irqDir, kernfs.Dir{Name: "200"})
	if _, err := tr.AddDir(n, kernfs.Dir{Name: "gpio-keys"}); err != nil {
		t.Fatal(err)
	}
	vs := quiesce(t, m)
	if len(vs) != 1 || vs[0].Class != check.ReferenceAfterUnregister || vs[0].Object != "/irq/200" {
		t.Fatalf("violations %v, want the leaked /irq/200 entry", vs)
	}
}

func TestQuiesceUnloadsEveryModuleNewestFirst(t *testing.T) {
	m := sim.New("m")
	var order []string
	for _, n := range []string{"scsi_mod", "libata", "ahci"} {
		n := n
		dep := map[string][]string{"libata": {"scsi_mod"}, "ahci": {"libata"}}[n]
		if _, err := m.Insmod(n, func() { order = append(order, n) }, dep...); err != nil {
			t.Fatal(err)
		}
	}
	quiesce(t, m)
	if fmt.Sprint(order) != "[ahci libata scsi_mod]" {
		t.Errorf("exit order %v, want ahci, libata, scsi_mod", order)
	}
	var unloaded int
	for _, e := range m.Trace().Events() {
		if e.Kind == sim.KindUnloaded {
			unloaded++
		}
	}
	if unloaded != 3 {
		t.Errorf("trace has %d unloaded events, want 3", unloaded)
	}
}
