package device_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// TestUnregisterFromOwnStoreFailsFast is the newcomer's mistake: a Store
// that calls Unregister (not UnregisterSelf) with context.Background().
// Unregister would wait for the Store it is called from forever; it must
// instead return, within a second, an error wrapping sever.ErrDeadlock
// that names the callback's file and points to UnregisterSelf, record no false
// ReleaseNeverRun, and leave the device removable from outside.
func TestUnregisterFromOwnStoreFailsFast(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	var got error
	m.driver(&device.Driver{
		Name: "scsi", IDs: []string{"disk"},
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "delete",
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				got = d.Unregister(context.Background()) // the mistake
				return got
			}}}}},
	})
	dev := m.register("sda", nil, "disk")
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- write(tree, "/devices/sda/delete", "1") }()
	select {
	case err := <-done:
		if !errors.Is(err, sever.ErrDeadlock) {
			t.Errorf("the write to delete = %v, want the Store's error, wrapping ErrDeadlock", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Unregister from the device's own Store hangs: a self-removal is not detected")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("the self-removal was reported after %v, want within 1s", el)
	}
	if !errors.Is(got, sever.ErrDeadlock) {
		t.Fatalf("Unregister from its own Store returned %v, want an error wrapping ErrDeadlock", got)
	}
	msg := got.Error()
	for _, want := range []string{"kernfs: /devices/sda/delete", "UnregisterSelf"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q: %s", want, msg)
		}
	}
	if n := strings.Count(msg, "ErrDeadlock"); strings.Count(msg, "deadlock") > 1 || n > 1 {
		t.Errorf("the error repeats itself: %s", msg)
	}
	// From outside the device is still removable, and completely.
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister from outside after the refused self-removal: %v", err)
	}
	if dev.State() != device.StateRemoved {
		t.Errorf("state after Unregister from outside: %v", dev.State())
	}
	// Only the misuse is on record: no false ReleaseNeverRun, no timeout.
	onlyMisuse(t, m)
}

// TestUnregisterFromOwnCharDeviceWriteFailsFast: the same mistake from a
// char device operation, whose sever is on the device's removal path too.
func TestUnregisterFromOwnCharDeviceWriteFailsFast(t *testing.T) {
	m := newMachine(t)
	dev := m.register("ring0dev", nil, "")
	var got error
	_, err := chardev.Register(dev, chardev.Config{Name: "ring0", Ops: chardev.Ops{
		Write: func(c *chardev.Call, data []byte) (int, error) {
			got = c.Cdev().Device().Unregister(context.Background()) // the mistake
			return len(data), nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := chardev.RegistryOf(m.core).Open("ring0", os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := f.Write([]byte("x")); err != nil {
			t.Errorf("the Write = %v, want nil: the operation returns nil after its refused Unregister", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Unregister from the device's own char device Write hangs")
	}
	if !errors.Is(got, sever.ErrDeadlock) || !strings.Contains(got.Error(), "chardev: /dev/ring0") {
		t.Fatalf("Unregister from its own Write returned %v, want ErrDeadlock naming chardev: /dev/ring0", got)
	}
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister from outside after the refused self-removal: %v", err)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("write after the device was removed from outside: %v, want ENODEV", err)
	}
	closeOK(t, f)
	onlyMisuse(t, m)
}

// TestRemoveAndCdevUnregisterFromOwnCallbackFailFast: the layers below
// Unregister refuse to wait for their caller too, and a removal from
// outside finishes what they began.
func TestRemoveAndCdevUnregisterFromOwnCallbackFailFast(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	var removeErr, unregErr error
	dev, err := m.core.Register(ctxT(t), device.Config{Name: "self0", Bus: m.bus,
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "gone",
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				removeErr = tree.Remove(context.Background(), c.Node()) // not RemoveSelf
				return nil
			}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	cd, err := chardev.Register(dev, chardev.Config{Name: "self0", Ops: chardev.Ops{
		Write: func(c *chardev.Call, data []byte) (int, error) {
			unregErr = c.Cdev().Unregister(context.Background())
			return len(data), nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := write(tree, "/devices/self0/gone", "1"); err != nil {
			t.Errorf("the write to gone = %v, want nil: its Store returns nil after the refused Remove", err)
		}
		if f, err := chardev.RegistryOf(m.core).Open("self0", os.O_WRONLY); err == nil {
			if _, err := f.Write([]byte("x")); err != nil {
				t.Errorf("the Write = %v, want nil: the operation returns nil after its refused Unregister", err)
			}
			closeOK(t, f)
		} else {
			t.Errorf("Open of the char device = %v, want nil: it is registered", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Tree.Remove or Cdev.Unregister from its own callback hangs")
	}
	if !errors.Is(removeErr, sever.ErrDeadlock) || !strings.Contains(removeErr.Error(), "/devices/self0/gone") {
		t.Errorf("Tree.Remove from its own Store: %v, want ErrDeadlock naming the node", removeErr)
	}
	if !errors.Is(unregErr, sever.ErrDeadlock) || !strings.Contains(unregErr.Error(), "/dev/self0") {
		t.Errorf("Cdev.Unregister from its own Write: %v, want ErrDeadlock naming the device", unregErr)
	}
	if err := cd.Unregister(ctxT(t)); err != nil {
		t.Errorf("Cdev.Unregister from outside: %v", err)
	}
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister from outside: %v", err)
	}
	if _, err := tree.Lookup("/devices/self0/gone"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the attribute after the device was removed from outside: %v, want ENOENT", err)
	}
	onlyMisuse(t, m)
}

// TestUnbindFromOwnStoreIsFinishedByUnbindFromOutside: the same mistake
// with Unbind. A driver attribute's Store that unbinds its own device gets
// ErrDeadlock naming the file, within a second; the device is left
// unbinding with its driver and Remove not yet run. After the Store has
// returned, an Unbind from outside finishes the unbind — Remove runs once,
// the driver's file goes, the device is StateRegistered — and the device
// can be bound again.
func TestUnbindFromOwnStoreIsFinishedByUnbindFromOutside(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	var got error
	var probes, removes atomic.Int32
	drv := m.driver(&device.Driver{
		Name: "scsi", IDs: []string{"disk"},
		Probe:  func(ctx context.Context, d *device.Device) error { probes.Add(1); return nil },
		Remove: func(ctx context.Context, d *device.Device) { removes.Add(1) },
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "detach",
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				got = d.Unbind(context.Background()) // the mistake
				return got
			}}}}},
	})
	dev := m.register("sda", nil, "disk")
	done := make(chan error, 1)
	go func() { done <- write(tree, "/devices/sda/detach", "1") }()
	select {
	case err := <-done:
		if !errors.Is(err, sever.ErrDeadlock) {
			t.Errorf("the write to detach = %v, want the Store's error, wrapping ErrDeadlock", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Unbind from a Store of its own binding hangs: the self-unbind is not detected")
	}
	if !errors.Is(got, sever.ErrDeadlock) || !strings.Contains(got.Error(), "kernfs: /devices/sda/detach") {
		t.Fatalf("Unbind from its own Store returned %v, want an error wrapping ErrDeadlock naming kernfs: /devices/sda/detach", got)
	}
	if s, d := dev.State(), dev.Driver(); s != device.StateUnbinding || d != drv {
		t.Errorf("after the refused self-unbind: state %v, driver kept %v; want unbinding with scsi kept", s, d == drv)
	}
	if n := removes.Load(); n != 0 {
		t.Errorf("Remove ran %d times during the refused self-unbind, want 0", n)
	}

	if err := dev.Unbind(ctxT(t)); err != nil {
		t.Fatalf("Unbind from outside after the refused self-unbind: %v", err)
	}
	if n := removes.Load(); n != 1 {
		t.Errorf("Remove ran %d times once Unbind from outside finished the unbind, want 1", n)
	}
	if s, d := dev.State(), dev.Driver(); s != device.StateRegistered || d != nil {
		t.Errorf("after Unbind from outside: state %v, driver left %v; want registered with no driver", s, d != nil)
	}
	if _, err := tree.Lookup("/devices/sda/detach"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the driver's attribute after the unbind finished: %v, want ENOENT", err)
	}
	if err := dev.Unbind(ctxT(t)); err != nil || removes.Load() != 1 {
		t.Errorf("a second Unbind from outside: %v, Remove ran %d times; want nil and still once", err, removes.Load())
	}

	if err := dev.Bind(ctxT(t), drv); err != nil {
		t.Fatalf("Bind after the finished unbind: %v", err)
	}
	if s, n := dev.State(), probes.Load(); s != device.StateBound || n != 2 {
		t.Errorf("after Bind: state %v, %d probes; want bound after 2", s, n)
	}
	if _, err := tree.Lookup("/devices/sda/detach"); err != nil {
		t.Errorf("the driver's attribute after binding again: %v", err)
	}
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister: %v", err)
	}
	if n := removes.Load(); n != 2 {
		t.Errorf("Remove ran %d times in all, want 2 (one per binding)", n)
	}
	onlyMisuse(t, m)
}

// TestUnbindFromOwnStoreIsFinishedByDriverUnregister: the driver's
// unregistration, from outside, finishes a self-unbind that stopped at
// ErrDeadlock too: Remove runs once and the device is left unbound.
func TestUnbindFromOwnStoreIsFinishedByDriverUnregister(t *testing.T) {
	m := newMachine(t)
	var got error
	var removes atomic.Int32
	drv := m.driver(&device.Driver{
		Name: "scsi", IDs: []string{"disk"},
		Remove: func(ctx context.Context, d *device.Device) { removes.Add(1) },
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "detach",
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				got = d.Unbind(context.Background()) // the mistake
				return got
			}}}}},
	})
	dev := m.register("sda", nil, "disk")
	if err := write(m.core.Sysfs(), "/devices/sda/detach", "1"); !errors.Is(err, sever.ErrDeadlock) || !errors.Is(got, sever.ErrDeadlock) {
		t.Fatalf("the self-unbind: write %v, Unbind %v; want both wrapping ErrDeadlock", err, got)
	}
	if err := m.bus.UnregisterDriver(ctxT(t), drv); err != nil {
		t.Fatalf("UnregisterDriver after the refused self-unbind: %v", err)
	}
	if s, n := dev.State(), removes.Load(); s != device.StateRegistered || dev.Driver() != nil || n != 1 {
		t.Errorf("after UnregisterDriver: state %v, driver left %v, Remove ran %d times; want registered, none, once", s, dev.Driver() != nil, n)
	}
	unregisterOK(t, dev)
	onlyMisuse(t, m)
}
