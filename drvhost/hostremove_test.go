package drvhost_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/drvhost"
)

// hangBound is how long a consumer may stay blocked after the host removed
// its device before the test calls it a hang: a bound on hangs, not a
// timing assertion.
const hangBound = 5 * time.Second

// A device the host removes by itself, while it lives on, is removed from
// the machine through the one removal path: blocked consumers return
// ENODEV, a blocked poller wakes with EventErr|EventHup, later calls are
// ENODEV, open files stay shells, and nothing leaks; the host and its
// other devices go on.
func TestDeviceRemovedInsideALiveHostIsRemovedFromTheMachine(t *testing.T) {
	testDeviceRemovedInsideHost(t, nil, true)
}

// An export without its Device is seen gone when its directory leaves
// the host's tree: the machine follows too, though a poller may wake a
// moment early with EventErr alone (see Export).
func TestDeviceRemovedInsideAHostIsFollowedByItsDirectoryAlone(t *testing.T) {
	testDeviceRemovedInsideHost(t, []string{dirOnlyEnv + "=1"}, false)
}

func testDeviceRemovedInsideHost(t *testing.T, env []string, wantHup bool) {
	m := newMachine(t, drvhost.Config{Policy: drvhost.RestartOnFailure, Backoff: time.Millisecond, Env: env})
	fds := countFDs(t)
	before := m.sup.Status()
	dev := m.sup.Device("widget")
	prov, _ := m.sup.Provider("widget")
	owner := m.sup.Owner()
	cdev, err := chardev.RegistryOf(m.core).Lookup("widget0")
	if err != nil {
		t.Fatal(err)
	}
	res, n, done := blockConsumers(t, m)
	idle := m.open("idle")
	idleFile, err := chardev.RegistryOf(m.core).Open("widget0", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	idleAttr, err := m.core.Sysfs().Open("/devices/host-w/widget/value", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	gp, err := m.sup.Provider("gadget")
	if err != nil {
		t.Fatal(err)
	}
	gh, err := gp.Open("unplugger")
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, "gadget handle", gh)

	// The host's own code removes widget.
	if _, err := call(gh, timeout(t, hangBound), "unplug", nil); err != nil {
		t.Fatalf("the host's unplug of widget: %v", err)
	}
	for range n {
		select {
		case r := <-res:
			if r.who == "char device poll" {
				want := sever.EventErr | sever.EventHup
				if !wantHup {
					want = sever.EventErr
				}
				if r.ev&want != want {
					t.Errorf("poller woke with %v, %v; want %v", r.ev, r.err, want)
				}
				continue
			}
			if !errors.Is(r.err, syscall.ENODEV) {
				t.Errorf("%s returned %v, want ENODEV", r.who, r.err)
			}
		case <-time.After(hangBound):
			t.Fatal("a blocked consumer never returned after the host removed its device: hang")
		}
	}
	select {
	case <-dev.Removed():
	case <-time.After(hangBound):
		t.Fatal("the machine's side of the removed device was never unregistered")
	}

	// The mirror is gone: directory, char device, provider.
	if _, err := m.core.Sysfs().Lookup("/devices/host-w/widget"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lookup of the removed device's directory = %v, want ENOENT", err)
	}
	if _, err := chardev.RegistryOf(m.core).Lookup("widget0"); err == nil {
		t.Error("the removed device's char device is still in the machine's dev/")
	}
	if _, err := m.sup.Provider("widget"); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Provider of the removed device = %v, want ENODEV", err)
	}
	if d := m.sup.Device("widget"); d != nil {
		t.Errorf("Device of the removed device = %v, want nil", d)
	}
	// Consumers' next calls are ENODEV; their open files are shells.
	if _, err := call(idle, context.Background(), "echo", []byte("x")); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("call through a handle after the removal = %v, want ENODEV", err)
	}
	if _, err := idleFile.Write([]byte("x")); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("write to an open char device after the removal = %v, want ENODEV", err)
	}
	if ev, err := idleFile.Poll(); ev&(sever.EventErr|sever.EventHup) != sever.EventErr|sever.EventHup || !errors.Is(err, syscall.ENODEV) {
		t.Errorf("poll of an open char device after the removal = %v, %v; want EventErr|EventHup, ENODEV", ev, err)
	}
	if _, err := idleAttr.ReadAt(make([]byte, 16), 0); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("read of an open attribute after the removal = %v, want ENODEV", err)
	}
	// The host lives on, in the same generation, and its other device works.
	if st := m.sup.Status(); st.State != drvhost.StateRunning || st.Pid != before.Pid || st.Generation != before.Generation {
		t.Errorf("host after removing one of its devices: %+v, want still %+v", st, before)
	}
	if owner.State() != sever.OwnerLive {
		t.Errorf("the generation's owner is %v after one device's removal, want live", owner.State())
	}
	if out, err := call(gh, context.Background(), "echo", []byte("still here")); err != nil || string(out) != "still here" {
		t.Errorf("call into the host's other device = %q, %v", out, err)
	}
	if got, err := m.read("/devices/host-w/gadget/id"); err != nil || got != "gadget\n" {
		t.Errorf("attribute of the host's other device = %q, %v", got, err)
	}

	done()
	closeOK(t, "handle", idle)
	closeOK(t, "char device", idleFile)
	closeOK(t, "attribute", idleAttr)
	if h, o := prov.Handles(), cdev.Opens(); h != 0 || o != 0 {
		t.Errorf("after every consumer closed: %d handles, %d opens of the removed device left: shells leaked", h, o)
	}
	if got := countFDs(t); got > fds {
		t.Errorf("fds: %d before the removal, %d after: leaked", fds, got)
	}
}

// An export bound to a driver lives as long as its binding: the machine's
// write to its mirrored unbind file unbinds it in the host, and the host's
// report removes it from the machine; the host goes on.
func TestUnbindThroughTheMirroredFileRemovesTheExport(t *testing.T) {
	m := newMachine(t, drvhost.Config{})
	before := m.sup.Status()
	dev := m.sup.Device("gizmo")
	if dev == nil {
		t.Fatal("no gizmo on the machine")
	}
	if got, err := m.read("/devices/host-w/gizmo/bound"); err != nil || got != "yes\n" {
		t.Fatalf("the driver's attribute, mirrored = %q, %v", got, err)
	}
	// The write races the removal it causes: it succeeds, or sees the
	// device gone under it.
	if err := m.write("/devices/host-w/gizmo/unbind", "1"); err != nil && !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("write to the mirrored unbind file: %v", err)
	}
	select {
	case <-dev.Removed():
	case <-time.After(hangBound):
		t.Fatal("the unbound export's machine side was never unregistered")
	}
	if _, err := m.core.Sysfs().Lookup("/devices/host-w/gizmo"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lookup of the unbound export's directory = %v, want ENOENT", err)
	}
	if st := m.sup.Status(); st.State != drvhost.StateRunning || st.Pid != before.Pid || st.Generation != before.Generation {
		t.Errorf("host after an unbind in it: %+v, want still %+v", st, before)
	}
	h := m.open("after-unbind")
	defer closeOK(t, "handle", h)
	if out, err := call(h, context.Background(), "echo", []byte("ok")); err != nil || string(out) != "ok" {
		t.Errorf("call into the host's widget after gizmo's unbind = %q, %v", out, err)
	}
}

// A host that dies while the machine is removing one of its devices is
// handled as any death: both removals take the one path, the host comes
// back with every device, and the checker is clean (newMachine's close).
func TestHostDeathDuringADeviceRemoval(t *testing.T) {
	m := newMachine(t, drvhost.Config{Policy: drvhost.RestartOnFailure, Backoff: time.Millisecond})
	res, n, done := blockConsumers(t, m)
	gp, err := m.sup.Provider("gadget")
	if err != nil {
		t.Fatal(err)
	}
	gh, err := gp.Open("unplugger")
	if err != nil {
		t.Fatal(err)
	}
	unplugged := make(chan struct{})
	go func() {
		defer close(unplugged)
		_, _ = call(gh, context.Background(), "unplug", nil) // the kill may end it either way
	}()
	time.Sleep(time.Millisecond)
	if _, err := m.sup.Kill(); err != nil && !errors.Is(err, syscall.ENODEV) {
		t.Fatal(err)
	}
	for range n {
		select {
		case r := <-res:
			if r.who != "char device poll" && !errors.Is(r.err, syscall.ENODEV) {
				t.Errorf("%s returned %v, want ENODEV", r.who, r.err)
			}
		case <-time.After(hangBound):
			t.Fatal("a blocked consumer never returned: hang")
		}
	}
	if _, err := m.sup.WaitRunning(timeout(t, 10*time.Second), 1); err != nil {
		t.Fatalf("host not restarted: %v", err)
	}
	for _, name := range []string{"widget", "gadget", "gizmo"} {
		if m.sup.Device(name) == nil {
			t.Errorf("generation 2 has no %s", name)
		}
	}
	<-unplugged
	done()
	closeOK(t, "gadget handle", gh)
}
