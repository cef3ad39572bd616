package device_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// childAttr is a group with one readable attribute, "a".
var childAttr = []device.AttrGroup{{Attrs: []device.Attr{{Name: "a",
	Show: func(c *kernfs.Call, d *device.Device, b []byte) ([]byte, error) { return append(b, "1\n"...), nil }}}}}

// TestChildrenUndoneBeforeParentFiles: the children step comes before the
// files step, for the device's own scope (Unregister) and a binding's
// (Unbind): when the parent's first file is severed, its child is removed
// and the child's attribute no longer callable.
func TestChildrenUndoneBeforeParentFiles(t *testing.T) {
	for _, how := range []string{"unregister", "unbind"} {
		t.Run(how, func(t *testing.T) {
			m := newMachine(t)
			tree := m.core.Sysfs()
			var child *device.Device
			var checked atomic.Bool
			probe := func(ctx context.Context, d *device.Device) error {
				var err error
				child, err = m.core.Register(ctx, device.Config{Name: "c", Parent: d, Groups: childAttr})
				if err != nil {
					return err
				}
				if _, err := read(t, tree, "/devices/p/c/a"); err != nil {
					t.Errorf("the child's attribute before removal: %v", err)
				}
				// Added after the child: newer, yet of a later stage.
				_, err = d.AddSeverable("parent file", device.StageFiles, func(context.Context) error {
					checked.Store(true)
					if s := child.State(); s != device.StateRemoved {
						t.Errorf("parent's files severed while its child is %v, want removed", s)
					}
					if _, err := read(t, tree, "/devices/p/c/a"); err == nil {
						t.Error("the child's attribute is still callable while the parent's files are severed")
					}
					return nil
				})
				return err
			}
			if how == "unregister" {
				// No driver: the child and the file are the device's own.
				p := m.register("p", nil, "")
				if err := probe(ctxT(t), p); err != nil {
					t.Fatal(err)
				}
				if err := p.Unregister(ctxT(t)); err != nil {
					t.Fatal(err)
				}
			} else {
				m.driver(&device.Driver{Name: "hub", IDs: []string{"hub"}, Probe: probe})
				p := m.register("p", nil, "hub")
				if err := p.Unbind(ctxT(t)); err != nil {
					t.Fatal(err)
				}
				if len(p.Children()) != 0 {
					t.Error("the binding's child outlived the binding")
				}
				unregisterOK(t, p)
			}
			if !checked.Load() {
				t.Fatal("the parent's file was never severed")
			}
			m.clean()
		})
	}
}

// TestChildUnregisteringItselfDuringParentUnplugGoesOnce races a child's
// own Unregister with its parent's removal (an unplug, or the end of the
// binding it was registered in): the child is removed exactly once — one
// Remove, one release of its managed resource, one "remove" uevent — the
// parent's removal waits for it, and nothing is left on a list.
func TestChildUnregisteringItselfDuringParentUnplugGoesOnce(t *testing.T) {
	for _, how := range []string{"unregister", "unbind"} {
		t.Run(how, func(t *testing.T) {
			m := newMachine(t)
			ctx := ctxT(t)
			var removes, releases atomic.Int32
			var child *device.Device
			m.driver(&device.Driver{Name: "hub", IDs: []string{"hub"},
				Probe: func(ctx context.Context, d *device.Device) error {
					var err error
					child, err = m.core.Register(ctx, device.Config{Name: "c", Parent: d, Bus: m.bus, Compatible: "leaf",
						Groups: childAttr, Release: func() { releases.Add(1) }})
					return err
				}})
			m.driver(&device.Driver{Name: "leaf", IDs: []string{"leaf"},
				Remove: func(ctx context.Context, d *device.Device) { removes.Add(1) }})
			sub := m.core.Subscribe(1 << 12)
			defer sub.Close()
			const rounds = 300
			for i := range rounds {
				hub := m.register(fmt.Sprintf("hub%d", i), nil, "hub")
				c := child
				var wg sync.WaitGroup
				wg.Add(2)
				go func() {
					defer wg.Done()
					if err := c.Unregister(ctx); err != nil {
						t.Errorf("the child's own Unregister: %v", err)
					}
				}()
				go func() {
					defer wg.Done()
					for range i % 32 { // land the parent's removal at a different point each time
						runtime.Gosched()
					}
					var err error
					if how == "unregister" {
						err = hub.Unregister(ctx)
					} else {
						err = hub.Unbind(ctx)
					}
					if err != nil {
						t.Errorf("the parent's removal: %v", err)
					}
					// The parent's removal returns only once the child is gone.
					if s := c.State(); s != device.StateRemoved {
						t.Errorf("the parent's removal returned with its child %v", s)
					}
				}()
				wg.Wait()
				if n := len(hub.Children()); n != 0 {
					t.Fatalf("round %d: %d children left", i, n)
				}
				unregisterOK(t, hub)
				if t.Failed() {
					t.FailNow()
				}
			}
			if r, rel := removes.Load(), releases.Load(); r != rounds || rel != rounds {
				t.Errorf("over %d rounds the child's Remove ran %d times, its release %d: want once each per round", rounds, r, rel)
			}
			removed := map[string]int{}
			for e, ok := sub.TryNext(); ok; e, ok = sub.TryNext() {
				if e.Action == device.ActionRemove {
					removed[e.Env["DEVPATH"]]++
				}
			}
			for i := range rounds {
				if p := fmt.Sprintf("/devices/hub%d/c", i); removed[p] != 1 {
					t.Errorf("%s: %d remove uevents, want 1", p, removed[p])
				}
			}
			m.clean() // a leaked or doubly put reference, a release never run
		})
	}
}

// TestChildOfAnEndingBindingIsRefused: a binding's children are undone
// first, so one registered while the binding ends (here, from the
// driver's Remove) would outlive it; Register refuses it with ENODEV and
// changes nothing.
func TestChildOfAnEndingBindingIsRefused(t *testing.T) {
	m := newMachine(t)
	var got error
	m.driver(&device.Driver{Name: "hub", IDs: []string{"hub"},
		Remove: func(ctx context.Context, d *device.Device) {
			_, got = m.core.Register(ctx, device.Config{Name: "late", Parent: d})
		}})
	hub := m.register("hub", nil, "hub")
	if err := hub.Unbind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(got, sever.ErrNoDevice) {
		t.Errorf("Register under a parent whose binding is ending: %v, want ENODEV", got)
	}
	if n := len(hub.Children()); n != 0 {
		t.Errorf("%d children after the refused Register", n)
	}
	// Unbound again, the parent takes children in its own scope.
	if _, err := m.core.Register(ctxT(t), device.Config{Name: "c", Parent: hub}); err != nil {
		t.Errorf("Register under the unbound parent: %v", err)
	}
	if err := hub.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	m.clean()
}

// TestParentUnregisterFromChildCallbackStopsAndResumes: the parent's
// Unregister called from inside its child's attribute Store — the
// children step reaches the child, whose file refuses to wait for the
// Store it is called from. The removal stops there (ErrDeadlock, the
// parent's files untouched), and an Unregister from outside removes the
// child, once, and the parent.
func TestParentUnregisterFromChildCallbackStopsAndResumes(t *testing.T) {
	m := newMachine(t)
	tree := m.core.Sysfs()
	hub := m.register("hub", nil, "")
	var got error
	var releases atomic.Int32
	_, err := m.core.Register(ctxT(t), device.Config{Name: "c", Parent: hub, Release: func() { releases.Add(1) },
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "unplug_parent",
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				got = d.Parent().Unregister(context.Background()) // the mistake
				return got
			}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var parentFile atomic.Bool
	if _, err := hub.AddSeverable("hub file", device.StageFiles, func(context.Context) error {
		parentFile.Store(true)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := write(tree, "/devices/hub/c/unplug_parent", "1"); !errors.Is(err, sever.ErrDeadlock) {
		t.Errorf("the write to unplug_parent = %v, want the Store's error, wrapping ErrDeadlock", err)
	}
	if !errors.Is(got, sever.ErrDeadlock) {
		t.Fatalf("the parent's Unregister from its child's Store: %v, want ErrDeadlock", got)
	}
	if parentFile.Load() {
		t.Error("the removal went on to the parent's files after its child refused")
	}
	if err := hub.Unregister(ctxT(t)); err != nil {
		t.Fatalf("Unregister from outside: %v", err)
	}
	if !parentFile.Load() || releases.Load() != 1 || len(hub.Children()) != 0 {
		t.Errorf("after the removal from outside: parent file severed %v, child released %d times, %d children",
			parentFile.Load(), releases.Load(), len(hub.Children()))
	}
	onlyMisuse(t, m)
}
