package device_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
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
	case <-done:
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
	for _, v := range m.log.Quiesce(ctxT(t)) {
		if v.Class != check.Misuse {
			t.Errorf("recorded besides the misuse: %v", v)
		}
	}
}
