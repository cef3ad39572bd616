package scsi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/scsi"
	"github.com/sever-dev/sever/subsys/block"
)

func setup(t *testing.T, bugs scsi.Bugs) (*sim.Machine, *scsi.Midlayer, *scsi.SD) {
	t.Helper()
	ctx := context.Background()
	m := sim.New(t.Name())
	scsiMod, _ := m.Insmod("scsi_mod", nil)
	sdMod, _ := m.Insmod("sd_mod", nil, "scsi_mod")
	libata, _ := m.Insmod("libata", nil, "scsi_mod")
	ahci, _ := m.Insmod("ahci", nil, "libata")
	ml, err := scsi.NewMidlayer(m, scsiMod, bugs)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := scsi.RegisterSD(ctx, m, sdMod, ml)
	if err != nil {
		t.Fatal(err)
	}
	if err := scsi.RegisterAHCI(ctx, m, ahci, scsi.NewLibata(m, libata, ml)); err != nil {
		t.Fatal(err)
	}
	if _, err := scsi.AddController(ctx, m, "ahci.0", scsi.NewDiskHardware(16)); err != nil {
		t.Fatal(err)
	}
	if sd.Disk("sda") == nil {
		t.Fatal("no sda")
	}
	return m, ml, sd
}

func quiesce(t *testing.T, m *sim.Machine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Quiesce(ctx); err != nil {
		t.Errorf("quiesce: %v", err)
	}
}

func TestDiskReadsBackWhatWasWritten(t *testing.T) {
	m, _, sd := setup(t, 0)
	ctx := context.Background()
	data := make([]byte, block.SectorSize)
	copy(data, "sever")
	if err := sd.Disk("sda").Submit(ctx, &blockq.Request{Op: blockq.OpWrite, Sector: 3, Data: data}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, block.SectorSize)
	if err := sd.Disk("sda").Submit(ctx, &blockq.Request{Op: blockq.OpRead, Sector: 3, Data: got}); err != nil || string(got[:5]) != "sever" {
		t.Errorf("read back %q, %v", got[:5], err)
	}
	quiesce(t, m)
	if !m.Log().Clean() {
		t.Errorf("violations: %v", m.Log().Violations())
	}
}

func TestDeleteRemovesTheDeviceFromAScheduledCallback(t *testing.T) {
	m, ml, sd := setup(t, 0)
	f, err := ml.OpenAttr("/block/sda/device/delete")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("1")); err != nil {
		t.Fatal(err)
	}
	closeOK(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Sysfs().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Sysfs().Lookup("/block/sda"); !errors.Is(err, sever.ErrNotExist) {
		t.Errorf("/block/sda after delete: %v, want ENOENT", err)
	}
	err = sd.Disk("sda").Submit(ctx, &blockq.Request{Op: blockq.OpRead, Data: make([]byte, block.SectorSize)})
	if !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("I/O after delete: %v, want ENODEV", err)
	}
	quiesce(t, m)
	if !m.Log().Clean() {
		t.Errorf("violations: %v", m.Log().Violations())
	}
}

func TestLegacyOpenRunsTheReleaseIntoAGoneLibata(t *testing.T) {
	m, ml, _ := setup(t, scsi.BugLegacyOpen)
	ctx := context.Background()
	f, err := ml.OpenAttr("/block/sda/device/delete")
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"ahci", "libata"} {
		if err := m.Rmmod(ctx, mod); err != nil {
			t.Fatal(err)
		}
	}
	closeOK(t, f)
	quiesce(t, m)
	if m.Log().Count(check.CallIntoGoneOwner) == 0 || m.Log().Count(check.ReferenceAfterUnregister) == 0 {
		t.Errorf("legacy open: %v; want a call into gone libata and the kobject reference audit", m.Log().Summary())
	}
}

// TestAHostOfAnUnloadedTemplateIsRefused is the other half of the libata
// finding of `sever stress --seed 7`: ahci loaded against a Libata value
// whose module was unloaded (a reload race in the harness) bound its
// controller, and the host called the gone libata's queuecommand and
// slave_destroy. A host pins its template's owner; one whose owner is
// not live is not made.
func TestAHostOfAnUnloadedTemplateIsRefused(t *testing.T) {
	ctx := context.Background()
	m := sim.New(t.Name())
	scsiMod, _ := m.Insmod("scsi_mod", nil)
	sdMod, _ := m.Insmod("sd_mod", nil, "scsi_mod")
	oldLibata, _ := m.Insmod("libata", nil, "scsi_mod")
	ml, err := scsi.NewMidlayer(m, scsiMod, 0)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := scsi.RegisterSD(ctx, m, sdMod, ml)
	if err != nil {
		t.Fatal(err)
	}
	stale := scsi.NewLibata(m, oldLibata, ml)
	if err := m.Rmmod(ctx, "libata"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Insmod("libata", nil, "scsi_mod"); err != nil {
		t.Fatal(err)
	}
	ahci, _ := m.Insmod("ahci", nil, "libata")
	if err := scsi.RegisterAHCI(ctx, m, ahci, stale); err != nil {
		t.Fatal(err)
	}
	if _, err := scsi.AddController(ctx, m, "ahci.0", scsi.NewDiskHardware(16)); err != nil {
		t.Fatal(err)
	}
	if sd.Disk("sda") != nil {
		t.Error("a disk was made behind a host whose template's module is gone")
	}
	quiesce(t, m)
	if n := m.Log().Count(check.CallIntoGoneOwner); n != 0 {
		t.Errorf("%d calls into the gone libata: %v", n, m.Log().Violations())
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
