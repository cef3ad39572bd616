package cp2112_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/subsys/gpio"
	"github.com/sever-dev/sever/subsys/irq"
	"github.com/sever-dev/sever/subsys/usb"
)

type board struct {
	m    *sim.Machine
	hw   *cp2112.Hardware
	port *usb.Port
	br   *cp2112.Bridge
}

func plug(t *testing.T, bugs cp2112.Bugs) *board {
	t.Helper()
	ctx := context.Background()
	m := sim.New(t.Name())
	cp, _ := m.Insmod("cp2112", nil)
	at24, _ := m.Insmod("at24", nil)
	lm75, _ := m.Insmod("lm75", nil)
	if _, err := cp2112.Register(ctx, m, cp, bugs); err != nil {
		t.Fatal(err)
	}
	if err := cp2112.RegisterClientDrivers(ctx, m, at24, lm75); err != nil {
		t.Fatal(err)
	}
	host, err := usb.NewHost(ctx, m.Core(), "usb1", 1)
	if err != nil {
		t.Fatal(err)
	}
	hw := cp2112.NewHardware("cp2112-0")
	if _, err := cp2112.Plug(ctx, m, host.Port(1), hw); err != nil {
		t.Fatal(err)
	}
	br, err := cp2112.Lookup(m.Core(), "cp2112-0")
	if err != nil {
		t.Fatal(err)
	}
	return &board{m: m, hw: hw, port: host.Port(1), br: br}
}

func (b *board) quiesce(t *testing.T) []check.Violation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs, err := b.m.Quiesce(ctx)
	if err != nil {
		t.Errorf("quiesce: %v", err)
	}
	return vs
}

func (b *board) client(i int) string {
	return b.br.Adapter().Device().Children()[i].Path()
}

func TestEEPROMAndSensorServeThroughSysfs(t *testing.T) {
	b := plug(t, 0)
	f, err := b.m.Sysfs().Open(b.client(0)+"/eeprom", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("sever"), 16); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := f.ReadAt(got, 16); err != nil || string(got) != "sever" {
		t.Errorf("eeprom read back %q, %v; want \"sever\"", got, err)
	}
	closeOK(t, f)
	b.hw.SetTemperature(42500)
	tf, err := b.m.Sysfs().Open(b.client(1)+"/temp1_input", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, _ := tf.Read(buf)
	closeOK(t, tf)
	if strings.TrimSpace(string(buf[:n])) != "42500" {
		t.Errorf("temp1_input = %q, want 42500", buf[:n])
	}
	if vs := b.quiesce(t); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
}

func TestEdgeRaisesIRQAndUserSpaceEvent(t *testing.T) {
	b := plug(t, 0)
	var fired int
	r, err := cp2112.RequestIRQ(b.m.Core(), "cp2112-0", 3, "test", func(int) { fired++ })
	if err != nil {
		t.Fatal(err)
	}
	f, err := cp2112.RequestLineEvents(b.m.Dev(), b.br.CdevName(), 3, gpio.EdgeBoth)
	if err != nil {
		t.Fatal(err)
	}
	b.hw.SetInput(3, true)
	b.hw.SetInput(3, false)
	ctx := context.Background()
	for i, rising := range []bool{true, false} {
		ev, err := cp2112.ReadLineEvent(ctx, f)
		if err != nil || ev.Line != 3 || ev.Rising != rising || ev.Seq != uint64(i+1) {
			t.Errorf("event %d: %+v, %v", i, ev, err)
		}
	}
	if fired != 1 {
		t.Errorf("handler ran %d times for one rising edge", fired)
	}
	if v, err := cp2112.LineValue(f); err != nil || v {
		t.Errorf("line value %v, %v; want low", v, err)
	}
	closeOK(t, f)
	if err := r.Free(ctx); err != nil {
		t.Errorf("free_irq: %v", err)
	}
	if vs := b.quiesce(t); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
}

func TestUnplugLeavesEveryConsumerAShell(t *testing.T) {
	b := plug(t, 0)
	ctx := context.Background()
	r, err := cp2112.RequestIRQ(b.m.Core(), "cp2112-0", 1, "consumer", func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	f, err := cp2112.RequestLineEvents(b.m.Dev(), b.br.CdevName(), 4, gpio.EdgeRising)
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan error, 1)
	go func() { _, err := cp2112.ReadLineEvent(ctx, f); woke <- err }()
	ee, err := b.m.Sysfs().Open(b.client(0)+"/eeprom", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.port.Unplug(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("reader across unplug: %v, want ENODEV", err)
	}
	if _, err := ee.ReadAt(make([]byte, 4), 0); !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("eeprom read after unplug: %v, want ENODEV", err)
	}
	if !errors.Is(r.Err(), sever.ErrNoDevice) {
		t.Errorf("requested IRQ after unplug: %v, want ENODEV", r.Err())
	}
	if n := irq.Requested(b.m.Core()); n != 0 {
		t.Errorf("%d IRQs still requested after the domain's removal", n)
	}
	if err := r.Free(ctx); err != nil {
		t.Errorf("Free of the shell: %v", err)
	}
	closeOK(t, f)
	closeOK(t, ee)
	if vs := b.quiesce(t); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
}

func TestNaiveDomainLeaksTheIRQEntry(t *testing.T) {
	b := plug(t, cp2112.BugLeakIRQs)
	ctx := context.Background()
	r, err := cp2112.RequestIRQ(b.m.Core(), "cp2112-0", 1, "consumer", func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.port.Unplug(ctx); err != nil {
		t.Fatalf("unplug: %v", err)
	}
	if r.Err() != nil {
		t.Errorf("naive IRQ reports %v; the naive domain never tells", r.Err())
	}
	if err := r.Free(ctx); err != nil {
		t.Errorf("free_irq: %v", err)
	}
	b.quiesce(t)
	if b.m.Log().Count(check.UseAfterFree) == 0 || b.m.Log().Count(check.ReferenceAfterUnregister) == 0 {
		t.Errorf("naive domain: %v; want a use after free and the leaked entry", b.m.Log().Summary())
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
