package usb_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/subsys/usb"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUnplugIsSurpriseRemovalWhereHardwareIsGoneAndNothingBlocks(t *testing.T) {
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	ctx := context.Background()
	host, _ := usb.NewHost(ctx, c, "usb1", 4)
	owner := sever.NewOwner("hid_cp2112", nil, sever.WithLog(log))
	var removeIOErr error
	var inIO atomic.Bool
	ioDone := make(chan error, 1)
	if err := usb.Bus(c).RegisterDriver(ctx, &device.Driver{Name: "cp2112", IDs: []string{usb.ID(0x10c4, 0xea90)}, Owner: owner,
		Probe: func(ctx context.Context, d *device.Device) error {
			u := usb.FromDevice(d)
			go func() { // an interrupt URB that waits for the hardware forever
				ioDone <- u.IO(context.Background(), func(ctx context.Context) error {
					inIO.Store(true)
					<-ctx.Done()
					return ctx.Err()
				})
			}()
			return nil
		},
		Remove: func(ctx context.Context, d *device.Device) {
			// A driver tells the hardware it is going: the hardware is gone,
			// and the call fails fast instead of blocking.
			removeIOErr = usb.FromDevice(d).IO(ctx, func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			})
		},
	}); err != nil {
		t.Fatalf("setup: RegisterDriver failed: %v", err)
	}
	sub := c.Subscribe(64)
	defer sub.Close()
	u, err := host.Port(2).Plug(ctx, usb.Descriptor{Vendor: 0x10c4, Product: 0xea90, Name: "CP2112"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Device().Driver() == nil || u.Device().Path() != "/devices/usb1/1-2" {
		t.Fatalf("plugged device %s not bound: %v", u.Device().Path(), u.Device().Driver())
	}
	if _, err := host.Port(2).Plug(ctx, usb.Descriptor{}); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Plug into an occupied port: %v, want EBUSY", err)
	}
	for !inIO.Load() {
		time.Sleep(time.Millisecond)
	}
	done := make(chan error)
	go func() { done <- host.Port(2).Unplug(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Unplug blocked on hardware that is gone")
	}
	if err := <-ioDone; !errors.Is(err, syscall.ENODEV) {
		t.Errorf("I/O in flight at unplug: %v, want ENODEV", err)
	}
	if !errors.Is(removeIOErr, syscall.ENODEV) {
		t.Errorf("I/O from Remove after unplug: %v, want ENODEV", removeIOErr)
	}
	if err := owner.Unload(ctx, sever.UnloadTry); err != nil {
		t.Errorf("driver's owner still busy after unplug: %v", err)
	}
	var actions []string
	for {
		e, ok := sub.TryNext()
		if !ok {
			break
		}
		if e.Path == "/devices/usb1/1-2" {
			actions = append(actions, e.Action.String())
		}
	}
	if want := []string{"add", "bind", "unbind", "remove"}; !slices.Equal(actions, want) {
		t.Errorf("uevents %q, want %q", actions, want)
	}
	if err := host.Remove(ctx); err != nil {
		t.Errorf("Remove of the host = %v, want nil: no callback is stuck", err)
	}
	for _, v := range log.Quiesce(ctx) {
		t.Errorf("violation: %v", v)
	}
}

// fanout is a driver whose Probe registers children child devices, each
// publishing a provider.
type fanout struct {
	children int
	provs    []*device.Provider[*int]
}

func (f *fanout) probe(ctx context.Context, d *device.Device) error {
	v := 0
	f.provs = f.provs[:0]
	for i := range f.children {
		ch, err := d.Core().Register(ctx, device.Config{Name: fmt.Sprint("fn", i), Parent: d})
		if err != nil {
			return err
		}
		p, err := device.NewProvider(ch, "fn", &v)
		if err != nil {
			return err
		}
		f.provs = append(f.provs, p)
	}
	return nil
}

// hub plugs a fanout device into port 1 and opens handles handles spread
// over its children's providers.
func hub(tb testing.TB, host *usb.Host, f *fanout, handles int) []*device.Handle[*int] {
	if _, err := host.Port(1).Plug(context.Background(), usb.Descriptor{Vendor: 1, Product: 1}); err != nil {
		tb.Fatal(err)
	}
	hs := make([]*device.Handle[*int], 0, handles)
	for i := range handles {
		h, err := f.provs[i%len(f.provs)].Open("user")
		if err != nil {
			tb.Fatal(err)
		}
		hs = append(hs, h)
	}
	return hs
}

func newFanout(tb testing.TB, c *device.Core, children int) *fanout {
	tb.Helper()
	f := &fanout{children: children}
	if err := usb.Bus(c).RegisterDriver(context.Background(), &device.Driver{Name: "fanout", IDs: []string{usb.ID(1, 1)}, Probe: f.probe}); err != nil {
		tb.Fatalf("register the fanout driver: %v", err)
	}
	return f
}

func TestUnplugWithManyChildrenAndHandlesLeavesOnlyShells(t *testing.T) {
	log := &check.Log{}
	c := device.NewCore(t.Name(), log)
	ctx := context.Background()
	host, _ := usb.NewHost(ctx, c, "usb1", 1)
	hs := hub(t, host, newFanout(t, c, 100), 1000)
	if err := host.Port(1).Unplug(ctx); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if err := h.Do(func(*int) error { return nil }); !errors.Is(err, syscall.ENODEV) {
			t.Fatalf("handle after unplug: %v, want ENODEV", err)
		}
		if err := h.Close(); err != nil {
			t.Errorf("Close of h = %v, want nil: a first Close succeeds", err)
		}
	}
	if n := len(host.Root().Children()); n != 0 {
		t.Errorf("%d devices left under the root hub", n)
	}
	if err := host.Remove(ctx); err != nil {
		t.Errorf("Remove of the host = %v, want nil: no callback is stuck", err)
	}
	for _, v := range log.Quiesce(ctx) {
		t.Errorf("violation: %v", v)
	}
}

// BenchmarkUnplug1kChildren10kHandles times the unplug of a device with
// 1000 child devices, each a provider, and 10000 open consumer handles.
func BenchmarkUnplug1kChildren10kHandles(b *testing.B) {
	ctx := context.Background()
	c := device.NewCore("bench", &check.Log{})
	host, _ := usb.NewHost(ctx, c, "usb1", 1)
	f := newFanout(b, c, 1000)
	for b.Loop() {
		b.StopTimer()
		hs := hub(b, host, f, 10000)
		b.StartTimer()
		if err := host.Port(1).Unplug(ctx); err != nil {
			b.Errorf("Unplug of Port(1) = %v, want nil: nothing is stuck in the driver", err)
		}
		b.StopTimer()
		for _, h := range hs {
			if err := h.Close(); err != nil {
				b.Errorf("Close of h = %v, want nil: a first Close succeeds", err)
			}
		}
		b.StartTimer()
	}
}
