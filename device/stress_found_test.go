package device_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// TestUnregisterDuringChildRegisterPutsParentOnce races a child's Register
// with its parent's Unregister, and the child's own Unregister with its
// parent's (found by sever stress, seed 1: a stress device's disk
// registered by a Probe while the device was unregistered). The child is in
// its parent's list before its Register has finished: the parent's removal
// must not unregister it half-made — it did, and the child's failed
// Register put the parent's reference a second time ("Put after release").
// And a child that has left the list must have dropped its pin on the
// parent: it left first, and the parent's audit found the pin.
func TestUnregisterDuringChildRegisterPutsParentOnce(t *testing.T) {
	m := newMachine(t, sever.WithTracking())
	ctx := context.Background()
	// Attributes make the child's directory slow to build: the window in
	// which the parent's removal found it half-made.
	var attrs []device.Attr
	for i := range 32 {
		attrs = append(attrs, device.Attr{Name: fmt.Sprintf("a%d", i), Show: func(c *kernfs.Call, d *device.Device, b []byte) ([]byte, error) { return b, nil }})
	}
	for i := range 2000 {
		parent := m.register(fmt.Sprintf("p%d", i), nil, "")
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			d, err := m.core.Register(ctx, device.Config{Name: "child", Parent: parent, Bus: m.bus, Groups: []device.AttrGroup{{Attrs: attrs}}})
			if err != nil && !errors.Is(err, sever.ErrNoDevice) {
				t.Errorf("Register under a parent being removed: %v; want nil or ENODEV", err)
			}
			if err == nil {
				unregisterOK(t, d) // a no-op if the parent's removal took it
			}
		}()
		go func() {
			defer wg.Done()
			for range i % 64 { // land the removal at a different point each time
				runtime.Gosched()
			}
			if err := parent.Unregister(ctx); err != nil {
				t.Errorf("Unregister of the parent: %v", err)
			}
		}()
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	m.clean()
}

// TestUnbindWaitsForSeverablesAnUnregisterIsSevering races a driver's
// unbind (an owner's unload) with the device's Unregister (found by sever
// stress, seed 1): the Unregister takes the binding's char device off the
// list and severs it — draining, then running per-open Releases — while
// the unbind, finding the list empty, went on to Remove: a Release ran
// after Remove. Remove must come after every severable of the binding is
// severed, whoever severs it.
func TestUnbindWaitsForSeverablesAnUnregisterIsSevering(t *testing.T) {
	m := newMachine(t)
	ctx := ctxT(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var severed, removedEarly atomic.Bool
	drv := m.driver(&device.Driver{Name: "s", IDs: []string{"s"},
		Probe: func(ctx context.Context, d *device.Device) error {
			_, err := d.AddSeverable("slow", device.StageFiles, func(context.Context) error {
				close(entered)
				<-release
				severed.Store(true)
				return nil
			})
			return err
		},
		Remove: func(ctx context.Context, d *device.Device) { removedEarly.Store(!severed.Load()) },
	})
	dev := m.register("s0", nil, "s")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); unregisterOK(t, dev) }()
	<-entered // the Unregister is severing the binding's severable
	go func() {
		defer wg.Done()
		if err := m.bus.UnregisterDriver(ctx, drv); err != nil {
			t.Errorf("UnregisterDriver = %v, want nil: no callback is stuck", err)
		}
	}()
	time.Sleep(10 * time.Millisecond) // let the unbind run as far as it would
	close(release)
	wg.Wait()
	if removedEarly.Load() {
		t.Fatal("Remove ran while a severable of its binding was still being severed")
	}
	m.clean()
}
