package sim_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/sim"
)

func writeAttr(m *sim.Machine, path, s string) error {
	f, err := m.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(s))
	return errors.Join(err, f.Close())
}

func readAttr(t *testing.T, m *sim.Machine, path string) string {
	t.Helper()
	f, err := m.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, f)
	buf := make([]byte, 64)
	n, _ := f.Read(buf)
	return string(buf[:n])
}

// /module/<name>/unload: try is refused with EBUSY while the module is
// pinned, force unloads it, and the directory goes with the module.
func TestModuleUnloadAttributeTriesAndForces(t *testing.T) {
	m := sim.New("m")
	if _, err := m.Insmod("scsi_mod", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Insmod("sd_mod", nil, "scsi_mod"); err != nil {
		t.Fatal(err)
	}
	if got := readAttr(t, m, "/module/scsi_mod/refcnt"); got != "1\n" {
		t.Errorf("scsi_mod refcnt %q, want 1 (sd_mod)", got)
	}
	if err := writeAttr(m, "/module/scsi_mod/unload", "force"); !errors.Is(err, sever.ErrBusy) {
		t.Errorf("force unload of a module another depends on: %v, want EBUSY", err)
	}
	if err := writeAttr(m, "/module/sd_mod/unload", "bogus"); !errors.Is(err, sever.ErrInvalid) {
		t.Errorf("unload bogus: %v, want EINVAL", err)
	}
	sd := m.Module("sd_mod")
	sd.Get("test user")
	if err := writeAttr(m, "/module/sd_mod/unload", "try\n"); !errors.Is(err, sever.ErrBusy) {
		t.Errorf("try unload of a pinned module: %v, want EBUSY", err)
	}
	if got := readAttr(t, m, "/module/sd_mod/initstate"); got != "live\n" {
		t.Errorf("initstate after a refused try: %q", got)
	}
	sd.Put("test user")
	if err := writeAttr(m, "/module/sd_mod/unload", "try\n"); err != nil {
		t.Errorf("try unload of an unused module: %v", err)
	}
	if _, err := m.Sysfs().Lookup("/module/sd_mod"); !errors.Is(err, sever.ErrNotExist) {
		t.Errorf("/module/sd_mod after unload: %v, want ENOENT", err)
	}
	if err := writeAttr(m, "/module/scsi_mod/unload", "force"); err != nil {
		t.Errorf("force unload: %v", err)
	}
	if s := m.Modules()["scsi_mod"]; s != sever.OwnerGone {
		t.Errorf("scsi_mod %v after force, want gone", s)
	}
	if err := m.Unload(context.Background(), "scsi_mod", sever.UnloadTry); !errors.Is(err, sever.ErrNotExist) {
		t.Errorf("unload of a gone module: %v, want ENOENT", err)
	}
	if vs := quiesce(t, m); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
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
