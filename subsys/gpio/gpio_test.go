package gpio_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/subsys/gpio"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type pins struct {
	mu sync.Mutex
	v  [8]bool
}

func (p *pins) Get(o int) (bool, error) { p.mu.Lock(); defer p.mu.Unlock(); return p.v[o], nil }
func (p *pins) Set(o int, v bool) error { p.mu.Lock(); defer p.mu.Unlock(); p.v[o] = v; return nil }

// expander is a device whose driver provides an 8-line chip in Probe.
func expander(t *testing.T) (*check.Log, *device.Device, *gpio.Chip) {
	t.Helper()
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	bus, _ := c.NewBus(device.BusConfig{Name: "usb"})
	var chip *gpio.Chip
	if err := bus.RegisterDriver(context.Background(), &device.Driver{Name: "cp2112", IDs: []string{"cp2112"},
		Probe: func(ctx context.Context, d *device.Device) (err error) {
			chip, err = gpio.AddChip(ctx, d, "cp2112-gpio", 8, &pins{})
			return err
		}}); err != nil {
		t.Fatalf("setup: RegisterDriver failed: %v", err)
	}
	dev, err := c.Register(context.Background(), device.Config{Name: "1-1", Bus: bus, Compatible: "cp2112"})
	if err != nil || chip == nil {
		t.Fatalf("no chip: %v", err)
	}
	return log, dev, chip
}

func TestLinesAndRequestsBecomeShellsWhenChipIsUnplugged(t *testing.T) {
	log, dev, chip := expander(t)
	ctx := context.Background()
	line, err := chip.RequestLine(0, "led")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chip.RequestLine(0, "other"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second request of a line: %v, want EBUSY", err)
	}
	if err := line.SetValue(true); err != nil {
		t.Errorf("SetValue of line = %v, want nil: the chip is live", err)
	}
	if v, err := line.Value(); !v || err != nil {
		t.Fatalf("Value on a live chip: %v, %v", v, err)
	}
	req, err := chip.RequestLines(gpio.RequestConfig{Offsets: []int{3}, Consumer: "button", Edges: gpio.EdgeBoth})
	if err != nil {
		t.Fatal(err)
	}
	if err := chip.Edge(3, true); err != nil {
		t.Errorf("Edge of chip = %v, want nil: the chip is live", err)
	}
	if e, err := req.ReadEvent(ctx); err != nil || !e.Rising || e.Offset != 3 {
		t.Fatalf("edge event: %+v, %v", e, err)
	}
	woke := make(chan error)
	go func() { _, err := req.ReadEvent(ctx); woke <- err }()
	time.Sleep(10 * time.Millisecond) // let the reader sleep

	if err := dev.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if !errors.Is(err, syscall.ENODEV) {
			t.Errorf("reader asleep at unplug woke with %v, want ENODEV", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader asleep at unplug never woke")
	}
	if ev := req.Poll(); ev != sever.EventErr|sever.EventHup {
		t.Errorf("Poll after unplug: %v, want ERR|HUP", ev)
	}
	if _, err := line.Value(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Value after unplug: %v, want ENODEV", err)
	}
	if err := line.SetValue(false); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("SetValue after unplug: %v, want ENODEV", err)
	}
	if _, err := req.Values(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Values after unplug: %v, want ENODEV", err)
	}
	if err := chip.Edge(3, false); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Edge after unplug: %v, want ENODEV", err)
	}
	if _, err := chip.RequestLine(1, "late"); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("RequestLine after unplug: %v, want ENODEV", err)
	}
	if _, err := gpio.Lookup(dev.Core(), "cp2112-gpio"); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Lookup of an unplugged chip: %v, want ENODEV", err)
	}
	if line.Close() != nil || req.Close() != nil {
		t.Error("Close of a shell failed")
	}
	if err := req.Close(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("second Close: %v, want EBADF", err)
	}
	for _, v := range log.Quiesce(ctx) {
		t.Errorf("violation: %v", v)
	}
}

func TestChipRemovalDoesNotWaitForConsumersToClose(t *testing.T) {
	_, dev, chip := expander(t)
	var lines []*gpio.Line
	for i := range 8 {
		l, _ := chip.RequestLine(i, fmt.Sprint("c", i))
		lines = append(lines, l)
	}
	done := make(chan error)
	go func() { done <- dev.Unregister(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("chip removal waited for consumers holding lines")
	}
	for _, l := range lines {
		if err := l.Close(); err != nil {
			t.Errorf("Close of l = %v, want nil: a first Close succeeds", err)
		}
	}
}

func ExampleChip_RequestLines() {
	ctx := context.Background()
	c := device.NewCore("example", &check.Log{})
	bus, _ := c.NewBus(device.BusConfig{Name: "usb"})
	var chip *gpio.Chip
	if err := bus.RegisterDriver(ctx, &device.Driver{Name: "cp2112", IDs: []string{"cp2112"},
		Probe: func(ctx context.Context, d *device.Device) (err error) {
			chip, err = gpio.AddChip(ctx, d, "cp2112-gpio", 8, &pins{})
			return err
		}}); err != nil {
		fmt.Println("register driver:", err)
	}
	dev, _ := c.Register(ctx, device.Config{Name: "1-1", Bus: bus, Compatible: "cp2112"})

	req, _ := chip.RequestLines(gpio.RequestConfig{Offsets: []int{2}, Consumer: "gpiomon", Edges: gpio.EdgeRising})
	if err := chip.Edge(2, true); err != nil {
		fmt.Println("edge:", err)
	}
	e, _ := req.ReadEvent(ctx)
	fmt.Println("edge on line", e.Offset)

	if err := dev.Unregister(ctx); err != nil { // unplugged
		fmt.Println("unregister:", err)
	}
	_, err := req.ReadEvent(ctx)
	fmt.Println(errors.Is(err, syscall.ENODEV), req.Poll())
	fmt.Println(req.Close())
	// Output:
	// edge on line 2
	// true ERR|HUP
	// <nil>
}
