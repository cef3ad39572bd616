package irq_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/subsys/irq"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func expander(t *testing.T) (*check.Log, *device.Core, *device.Device, *irq.Domain) {
	t.Helper()
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	bus, _ := c.NewBus(device.BusConfig{Name: "usb"})
	var dom *irq.Domain
	if err := bus.RegisterDriver(context.Background(), &device.Driver{Name: "cp2112", IDs: []string{"cp2112"},
		Probe: func(ctx context.Context, d *device.Device) (err error) {
			dom, err = irq.AddDomain(ctx, d, "cp2112", 8)
			return err
		}}); err != nil {
		t.Fatalf("setup: RegisterDriver failed: %v", err)
	}
	dev, _ := c.Register(context.Background(), device.Config{Name: "1-1", Bus: bus, Compatible: "cp2112"})
	if dom == nil {
		t.Fatal("no domain")
	}
	return log, c, dev, dom
}

func TestDomainRemovedWithRequestedIRQsDrainsDetachesAndLeavesShells(t *testing.T) {
	log, c, dev, dom := expander(t)
	ctx := context.Background()
	n, err := dom.Map(3)
	if err != nil {
		t.Fatal(err)
	}
	var runs, late atomic.Int64
	var removed atomic.Bool
	inHandler := make(chan struct{})
	release := make(chan struct{})
	req, err := irq.RequestIRQ(c, n, "button", func(int) {
		if removed.Load() {
			late.Add(1)
		}
		if runs.Add(1) == 1 {
			close(inHandler)
			<-release // a slow first handler, running at unplug
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sysfs().Lookup("/irq/" + strconv.Itoa(n) + "/actions"); err != nil {
		t.Fatalf("per-IRQ node missing: %v", err)
	}
	fired := make(chan error, 1)
	go func() {
		_, err := dom.Fire(3)
		fired <- err
	}()
	<-inHandler
	unreg := make(chan error)
	go func() { unreg <- dev.Unregister(ctx) }()
	select {
	case err := <-unreg:
		t.Fatalf("domain removal returned (%v) while a handler was still running", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := <-unreg; err != nil {
		t.Fatal(err)
	}
	if err := <-fired; err != nil {
		t.Errorf("the Fire whose handler ran across the removal = %v, want nil (it ran before the sever)", err)
	}
	removed.Store(true)
	if ran, err := dom.Fire(3); ran != 0 || !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Fire after removal ran %d handlers (%v), want 0 and ENODEV", ran, err)
	}
	if late.Load() != 0 {
		t.Errorf("handler ran %d times after the domain was removed", late.Load())
	}
	if err := req.Err(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("request after removal: %v, want ENODEV (a shell)", err)
	}
	if _, err := c.Sysfs().Lookup("/irq/" + strconv.Itoa(n)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("/irq/%d after the domain was removed: %v, want ENOENT (the procfs leak of seed 000)", n, err)
	}
	if irq.Requested(c) != 0 {
		t.Errorf("%d IRQs still requested after their domain was removed", irq.Requested(c))
	}
	if err := req.Free(ctx); err != nil {
		t.Errorf("Free on a shell: %v, want nil", err)
	}
	if err := req.Free(ctx); !errors.Is(err, syscall.EBADF) {
		t.Errorf("second Free: %v, want EBADF", err)
	}
	if _, err := irq.RequestIRQ(c, n, "late", func(int) {}); err == nil {
		t.Error("request of an IRQ of a removed domain succeeded")
	}
	for _, v := range log.Quiesce(ctx) {
		t.Errorf("violation: %v", v)
	}
}

func TestFreeWaitsForRunningHandlerAndStopsIt(t *testing.T) {
	_, c, dev, dom := expander(t)
	ctx := context.Background()
	n, _ := dom.Map(0)
	var runs atomic.Int64
	req, _ := irq.RequestIRQ(c, n, "x", func(int) { runs.Add(1) })
	if _, err := dom.Fire(0); err != nil {
		t.Errorf("Fire of dom = %v, want nil: the domain is live", err)
	}
	if err := req.Free(ctx); err != nil {
		t.Errorf("Free of req = %v, want nil: the IRQ was requested", err)
	}
	if _, err := dom.Fire(0); err != nil {
		t.Errorf("Fire of dom = %v, want nil: the domain is live", err)
	}
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1 (once before Free, never after)", runs.Load())
	}
	if err := dev.Unregister(ctx); err != nil {
		t.Errorf("Unregister of dev = %v, want nil: nothing is stuck in the driver", err)
	}
}
