package gpiokeys_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/sim/gpiokeys"
	"github.com/sever-dev/sever/subsys/irq"
	"github.com/sever-dev/sever/subsys/usb"
)

func read(t *testing.T, m *sim.Machine, path string) (string, error) {
	t.Helper()
	f, err := m.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer closeOK(t, f)
	buf := make([]byte, 64)
	n, err := f.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

func TestKeyStaysBoundAndServingWhenItsProviderGoes(t *testing.T) {
	ctx := context.Background()
	m := sim.New(t.Name())
	cp, _ := m.Insmod("cp2112", nil)
	gk, _ := m.Insmod("gpio_keys", nil)
	if _, err := cp2112.Register(ctx, m, cp, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := gpiokeys.Register(ctx, m, gk); err != nil {
		t.Fatal(err)
	}
	host, _ := usb.NewHost(ctx, m.Core(), "usb1", 1)
	hw := cp2112.NewHardware("cp2112-0")
	if _, err := cp2112.Plug(ctx, m, host.Port(1), hw); err != nil {
		t.Fatal(err)
	}
	d, err := gpiokeys.AddDevice(ctx, m, gpiokeys.Config{Name: "gpio-keys.0", Chip: "cp2112-0", Line: 2,
		RequestIRQ: func(name string, h irq.Handler) (gpiokeys.IRQ, error) {
			return cp2112.RequestIRQ(m.Core(), "cp2112-0", 2, name, h)
		}})
	if err != nil || d.Driver() == nil {
		t.Fatalf("gpio-keys did not bind: %v", err)
	}
	for range 3 {
		hw.SetInput(2, true)
		hw.SetInput(2, false)
	}
	if got, err := read(t, m, d.Path()+"/presses"); got != "3" || err != nil {
		t.Errorf("presses = %q, %v; want 3", got, err)
	}
	if got, err := read(t, m, d.Path()+"/value"); got != "0" || err != nil {
		t.Errorf("value = %q, %v; want 0", got, err)
	}

	if err := host.Port(1).Unplug(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Driver() == nil {
		t.Fatal("gpio-keys was unbound by its provider's unplug")
	}
	if _, err := read(t, m, d.Path()+"/value"); !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("value after unplug: %v, want ENODEV", err)
	}
	if got, err := read(t, m, d.Path()+"/presses"); got != "3" || err != nil {
		t.Errorf("presses after unplug = %q, %v; want 3", got, err)
	}
	if got, _ := read(t, m, d.Path()+"/irq"); !strings.Contains(got, "provider gone") {
		t.Errorf("irq after unplug = %q", got)
	}
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if vs, err := m.Quiesce(ctx2); len(vs) != 0 || err != nil {
		t.Errorf("quiesce: %v, %v", vs, err)
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
