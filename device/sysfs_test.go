package device_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

func read(t *testing.T, tree *kernfs.Tree, path string) (string, error) {
	t.Helper()
	f, err := tree.Open(path, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer closeOK(t, f)
	b, err := io.ReadAll(f)
	return string(b), err
}

func write(tree *kernfs.Tree, path, v string) error {
	f, err := tree.Open(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(v))
	return errors.Join(err, f.Close()) // a first Close succeeds: its error fails the caller's check
}

func TestDeviceDirectoryHasStandardAttributesAndLinks(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	m.driver(&device.Driver{Name: "std", IDs: []string{"std"}})
	dev := m.register("std0", nil, "std")
	if s, err := read(t, tree, "/devices/std0/uevent"); err != nil || !strings.Contains(s, "DRIVER=std") {
		t.Errorf("uevent file: %q, %v; want DRIVER=std", s, err)
	}
	for _, link := range []string{"/devices/std0/subsystem", "/devices/std0/driver", "/bus/platform/devices/std0"} {
		if _, err := tree.Lookup(link); err != nil {
			t.Errorf("%s: %v", link, err)
		}
	}
	if err := write(tree, "/devices/std0/unbind", "1"); err != nil {
		t.Fatalf("writing the unbind control: %v", err)
	}
	if dev.Driver() != nil {
		t.Error("device still bound after a write to its unbind control")
	}
	if _, err := tree.Lookup("/devices/std0/driver"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("driver link after unbind: %v, want ENOENT", err)
	}
	if err := write(tree, "/bus/platform/drivers/std/bind", "std0"); err != nil || dev.Driver() == nil {
		t.Errorf("bind through the driver's bind file: %v, driver %v", err, dev.Driver())
	}
	unregisterOK(t, dev)
	for _, p := range []string{"/devices/std0", "/bus/platform/devices/std0"} {
		if _, err := tree.Lookup(p); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%s after Unregister: %v, want ENOENT", p, err)
		}
	}
	m.clean()
}

// TestUnbindControlRefusesAnythingButOne: a device's unbind file takes "1"
// (with or without a newline); any other write — NUL, 0xff, a path, a huge
// number, the device's name, random bytes — fails with EINVAL and leaves
// the device bound.
func TestUnbindControlRefusesAnythingButOne(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	m.driver(&device.Driver{Name: "std", IDs: []string{"std"}})
	dev := m.register("std0", nil, "std")
	for _, bad := range []string{"", "\n", "0", "1 ", " 1", "11", "01", "1\n\n", "\x00", "1\x00", "\xff", "../x",
		"99999999999999999999999", "std0", "y", "true", "\x8a\x13\xfe\x00\x7fzz"} {
		err := write(tree, "/devices/std0/unbind", bad)
		if !errors.Is(err, sever.ErrInvalid) || !errors.Is(err, syscall.EINVAL) {
			t.Errorf("write %q to unbind: %v, want an error wrapping ErrInvalid (EINVAL)", bad, err)
		}
		if dev.Driver() == nil || dev.State() != device.StateBound {
			t.Fatalf("write %q to unbind was refused but unbound the device (state %v)", bad, dev.State())
		}
	}
	if _, err := tree.Lookup("/devices/std0/driver"); err != nil {
		t.Errorf("driver link after refused unbind writes: %v", err)
	}
	if err := write(tree, "/devices/std0/unbind", "1\n"); err != nil {
		t.Fatalf("write \"1\\n\" to unbind: %v", err)
	}
	if dev.Driver() != nil || dev.State() != device.StateRegistered {
		t.Errorf("after \"1\\n\" to unbind: driver %v, state %v; want unbound", dev.Driver(), dev.State())
	}
	if err := dev.Unregister(ctxT(t)); err != nil {
		t.Errorf("Unregister: %v", err)
	}
	m.clean()
}

func TestBusWithoutBindAttrsHasNoUnbindControl(t *testing.T) {
	m := newMachine(t)
	bus, _ := m.core.NewBus(device.BusConfig{Name: "fixed", SuppressBindAttrs: true})
	dev, _ := m.core.Register(ctxT(t), device.Config{Name: "f0", Bus: bus})
	if _, err := m.core.Sysfs().Lookup("/devices/f0/unbind"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("unbind control on a bus that suppresses it: %v", err)
	}
	unregisterOK(t, dev)
	m.clean()
}

func TestDriverGroupsHiddenDuringProbeShownAfter(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	var seenInProbe error
	fail := true
	m.driver(&device.Driver{
		Name: "g", IDs: []string{"g"},
		Groups: []device.AttrGroup{{Name: "power", Attrs: []device.Attr{{Name: "level",
			Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) { return append(buf, "3\n"...), nil }}}}},
		Probe: func(ctx context.Context, d *device.Device) error {
			_, seenInProbe = tree.Lookup("/devices/g0/power/level")
			if fail {
				return errors.New("no")
			}
			return nil
		},
	})
	dev := m.register("g0", nil, "g")
	if !errors.Is(seenInProbe, syscall.ENOENT) {
		t.Errorf("driver group visible during Probe: %v", seenInProbe)
	}
	if _, err := tree.Lookup("/devices/g0/power"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("group of a failed Probe still there: %v", err)
	}
	fail = false
	if err := dev.Bind(ctxT(t), m.bus.Drivers()[0]); err != nil {
		t.Fatal(err)
	}
	if s, err := read(t, tree, "/devices/g0/power/level"); s != "3\n" || err != nil {
		t.Errorf("group after a successful Probe: %q, %v", s, err)
	}
	unregisterOK(t, dev)
	m.clean()
}

func TestAttributeDrainedAndSeveredBeforeRemove(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	var inShow, removed atomic.Bool
	var lateShow atomic.Int32
	release := make(chan struct{})
	owner := sever.NewOwner("attrmod", nil, sever.WithLog(m.log))
	m.driver(&device.Driver{
		Name: "a", IDs: []string{"a"}, Owner: owner,
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "temp",
			Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
				if removed.Load() {
					lateShow.Add(1)
				}
				if !inShow.Swap(true) {
					<-release // the first read is slow
				}
				return append(buf, "41\n"...), nil
			}}}}},
		Remove: func(ctx context.Context, d *device.Device) { removed.Store(true) },
	})
	dev := m.register("a0", nil, "a")
	idle, err := tree.Open("/devices/a0/temp", os.O_RDONLY) // an open file, not reading
	if err != nil {
		t.Fatal(err)
	}
	readDone := make(chan error)
	go func() {
		f, err := tree.Open("/devices/a0/temp", os.O_RDONLY)
		if err == nil {
			_, err = f.Read(make([]byte, 16)) // one read: Show's result
			closeOK(t, f)
		}
		readDone <- err
	}()
	for !inShow.Load() {
		time.Sleep(time.Millisecond)
	}
	unreg := make(chan error)
	go func() { unreg <- dev.Unregister(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if removed.Load() {
		t.Fatal("Remove ran while a Show was still inside the driver")
	}
	close(release)
	if err := <-readDone; err != nil {
		t.Errorf("the read in flight at removal: %v, want it to finish normally", err)
	}
	if err := <-unreg; err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := idle.Read(buf); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("read on a file left open across unplug: %v, want ENODEV", err)
	}
	if lateShow.Load() != 0 {
		t.Errorf("Show ran %d times after Remove", lateShow.Load())
	}
	if err := idle.Close(); err != nil {
		t.Errorf("Close of a severed file: %v", err)
	}
	if err := owner.Unload(ctxT(t), sever.UnloadTry); err != nil {
		t.Errorf("owner still busy after its device was removed and files severed: %v", err)
	}
	m.clean()
}

func TestDeleteAttributeUnregistersItsOwnDevice(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	var removed atomic.Bool
	m.driver(&device.Driver{
		Name: "scsi", IDs: []string{"disk"},
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "delete",
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				return d.UnregisterSelf(context.Background(), c)
			}}}}},
		Remove: func(ctx context.Context, d *device.Device) { removed.Store(true) },
	})
	dev := m.register("sda", nil, "disk")
	done := make(chan error)
	go func() { done <- write(tree, "/devices/sda/delete", "1") }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("write to delete: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an attribute removing its own device deadlocked")
	}
	if !removed.Load() || dev.State() != device.StateRemoved {
		t.Errorf("after delete: Remove ran %v, state %v", removed.Load(), dev.State())
	}
	m.clean()
}

func TestUnloadForceSeversOpenDriverAttributes(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	owner := sever.NewOwner("hwmon", nil, sever.WithLog(m.log))
	m.driver(&device.Driver{
		Name: "hw", IDs: []string{"hw"}, Owner: owner,
		Groups: []device.AttrGroup{{Name: "hwmon", Attrs: []device.Attr{{Name: "fan",
			Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
				return append(buf, "1200\n"...), nil
			}}}}},
	})
	dev := m.register("hw0", nil, "hw")
	f, err := tree.Open("/devices/hw0/hwmon/fan", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Unload(ctxT(t), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("UnloadTry with a bound device and an open file: %v, want EBUSY", err)
	}
	if err := owner.Unload(ctxT(t), sever.UnloadForce); err != nil {
		t.Fatalf("UnloadForce with an open file: %v (it must not wait for the file to close)", err)
	}
	if _, err := f.Read(make([]byte, 8)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("read after the owner unloaded: %v, want ENODEV", err)
	}
	closeOK(t, f)
	unregisterOK(t, dev)
	m.clean()
}
