package device_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/sever-dev/sever/device"
)

// TestUnplugRemovesChildrenNewestFirst: with children kept on an intrusive
// list, an unplug still removes them newest first, and Children, Roots and
// Bus.Devices list them oldest first.
func TestUnplugRemovesChildrenNewestFirst(t *testing.T) {
	m := newMachine(t)
	hub := m.register("hub", nil, "")
	var names []string
	for i := range 50 {
		names = append(names, "1-"+strconv.Itoa(i))
		m.register(names[i], hub, "")
	}
	var got []string
	for _, c := range hub.Children() {
		got = append(got, c.Name())
	}
	if !slices.Equal(got, names) {
		t.Fatalf("Children %q, want oldest first %q", got, names)
	}
	if devs := m.bus.Devices(); len(devs) != 51 || devs[0] != hub || devs[50].Name() != names[49] {
		t.Fatalf("bus lists %d devices, not oldest first", len(devs))
	}
	sub := m.core.Subscribe(256)
	defer sub.Close()
	if err := hub.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	var removed []string
	for e, ok := sub.TryNext(); ok; e, ok = sub.TryNext() {
		if e.Action == device.ActionRemove {
			removed = append(removed, e.Env["DEVPATH"])
		}
	}
	var want []string
	for i := len(names) - 1; i >= 0; i-- {
		want = append(want, "/devices/hub/"+names[i])
	}
	want = append(want, "/devices/hub")
	if !slices.Equal(removed, want) {
		t.Fatalf("removed %q, want newest first %q", removed, want)
	}
	if len(hub.Children()) != 0 || len(m.bus.Devices()) != 0 || len(m.core.Roots()) != 0 {
		t.Fatal("unplugged devices left on a list")
	}
	m.clean()
}

// TestConcurrentRegisterUnregisterKeepsListsExact registers and
// unregisters children of one parent from several goroutines (under
// -race), with names reused, then checks the lists hold exactly the
// survivors and a name is refused only while it is taken.
func TestConcurrentRegisterUnregisterKeepsListsExact(t *testing.T) {
	m := newMachine(t)
	hub := m.register("hub", nil, "")
	const workers, rounds = 4, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				name := "w" + strconv.Itoa(w) + "-" + strconv.Itoa(r%7) // reused names
				d, err := m.core.Register(context.Background(), device.Config{Name: name, Parent: hub, Bus: m.bus})
				if err != nil {
					if _, err2 := m.core.Register(context.Background(), device.Config{Name: name, Parent: hub, Bus: m.bus}); err2 == nil {
						t.Errorf("%s refused once, accepted right after while still taken", name)
					}
					continue
				}
				if _, err := m.core.Register(context.Background(), device.Config{Name: name, Parent: hub, Bus: m.bus}); err == nil {
					t.Errorf("duplicate %s accepted", name)
				}
				if r%3 != 0 {
					if err := d.Unregister(context.Background()); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	kids := hub.Children()
	seen := map[string]bool{}
	for _, c := range kids {
		if seen[c.Name()] {
			t.Fatalf("%s listed twice", c.Name())
		}
		seen[c.Name()] = true
		if c.State() == device.StateRemoved {
			t.Fatalf("removed %s still listed", c.Name())
		}
	}
	if devs := m.bus.Devices(); len(devs) != len(kids)+1 {
		t.Fatalf("bus lists %d devices, tree %d", len(devs), len(kids)+1)
	}
	if err := hub.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if len(hub.Children()) != 0 || len(m.bus.Devices()) != 0 {
		t.Fatal("devices left on a list after unplug")
	}
	m.clean()
}

// TestSupplierUnbindsManagedConsumersNewestLinkFirst: links live on
// intrusive lists; a deleted link (here the middle one, and the oldest)
// leaves the others in order, and the supplier's removal unbinds the
// remaining managed consumers newest link first.
func TestSupplierUnbindsManagedConsumersNewestLinkFirst(t *testing.T) {
	m := newMachine(t)
	ctx := ctxT(t)
	var j journal
	m.driver(&device.Driver{Name: "c", IDs: []string{"c"},
		Remove: func(_ context.Context, d *device.Device) { j.add(d.Name()) }})
	m.driver(&device.Driver{Name: "s", IDs: []string{"s"}})
	sup := m.register("sup", nil, "s")
	var links []*device.Link
	for i := range 5 {
		con := m.register("con"+strconv.Itoa(i), nil, "c")
		l, err := m.core.AddLink(con, sup, device.LinkManaged)
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l)
	}
	links[2].Delete()
	links[0].Delete()
	links[0].Delete() // a second Delete does nothing
	if err := sup.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := j.get(), []string{"con4", "con3", "con1"}; !slices.Equal(got, want) {
		t.Errorf("consumers unbound %q, want newest link first %q", got, want)
	}
	if err := m.core.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil: no callback is stuck", err)
	}
	m.clean()
}
