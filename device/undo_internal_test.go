package device

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// checkUndo fails t unless d's undo list is well formed and keeps the
// invariant that makes every pop O(1) (see "The undo list"): in each
// stage, oldest first by seq, the device's own entries before the current
// binding's, and no entry of another binding — so the current binding has
// a pending entry exactly when the tail is its own.
func checkUndo(t *testing.T, d *Device, when string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for st := range nStages {
		l := &d.undo[st]
		var prev *undoEntry
		seenBinding := false
		for e := range l.All() {
			switch {
			case !l.Contains(&e.links) || e.stage != Stage(st):
				t.Fatalf("%s: stage %d: entry %s mislinked", when, st, e.name)
			case prev != nil && prev.seq >= e.seq:
				t.Errorf("%s: stage %d: %s (seq %d) after %s (seq %d): not oldest first", when, st, e.name, e.seq, prev.name, prev.seq)
			case e.scope == nil && seenBinding:
				t.Errorf("%s: stage %d: the device's own %s is newer than a binding's entry", when, st, e.name)
			case e.scope != nil && e.scope != d.bind:
				t.Errorf("%s: stage %d: %s belongs to a binding that is not the current one", when, st, e.name)
			}
			if e.scope != nil {
				seenBinding = true
			}
			prev = e
		}
		back := slices.Collect(l.Backward())
		slices.Reverse(back)
		if fwd := slices.Collect(l.All()); !slices.Equal(fwd, back) || l.Back() != prev || l.Len() != len(fwd) {
			t.Fatalf("%s: stage %d: the list read newest first, its Back or its Len disagrees with it read oldest first", when, st)
		}
	}
}

// undoRig makes a core with one device, d, on a bus, unbound.
func undoRig(t *testing.T) (*Core, *Device, *check.Log) {
	t.Helper()
	log := &check.Log{}
	c := NewCore(t.Name(), log)
	bus, err := c.NewBus(BusConfig{Name: "platform"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Register(context.Background(), Config{Name: "d", Bus: bus})
	if err != nil {
		t.Fatal(err)
	}
	return c, d, log
}

// undoDriver registers on d's bus a driver with probe that matches no
// device: it binds only by Bind.
func undoDriver(t *testing.T, d *Device, probe func(context.Context, *Device) error) *Driver {
	t.Helper()
	drv := &Driver{Name: "drv", IDs: []string{"x"}, Probe: probe}
	if err := d.Bus().RegisterDriver(context.Background(), drv); err != nil {
		t.Fatal(err)
	}
	return drv
}

// TestUndoListKeepsItsInvariant drives one device through the ways its
// scope changes — entries of its own, a binding, an unbind, a rebind, a
// Probe that fails after adding entries, drops in the middle — and checks
// the list after each step.
func TestUndoListKeepsItsInvariant(t *testing.T) {
	ctx := context.Background()
	c, d, log := undoRig(t)
	fail := false
	var lateAdd error
	add := func(d *Device, tag string) {
		t.Helper()
		if _, err := c.Register(ctx, Config{Name: "child-" + tag, Parent: d}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.AddSeverable("file "+tag, StageFiles, func(context.Context) error {
			// A removal is running: nothing joins the scope it undoes.
			_, lateAdd = d.AddResource("late", func() {})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		drop, err := d.AddSeverable("dropped "+tag, StageProviders, func(context.Context) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.AddResource("res "+tag, func() {}); err != nil {
			t.Fatal(err)
		}
		drop() // from the middle of its stage
	}
	drv := undoDriver(t, d, func(ctx context.Context, d *Device) error {
		add(d, "probe")
		checkUndo(t, d, "in Probe")
		if fail {
			return errors.New("probe fails")
		}
		return nil
	})
	add(d, "own1")
	checkUndo(t, d, "unbound")
	for round := range 3 {
		fail = round == 1
		lateAdd = nil
		err := d.Bind(ctx, drv)
		if fail != (err != nil) {
			t.Fatalf("round %d: Bind: %v", round, err)
		}
		checkUndo(t, d, fmt.Sprintf("round %d: after Bind", round))
		if !fail {
			add(d, fmt.Sprintf("bound%d", round))
			checkUndo(t, d, fmt.Sprintf("round %d: bound", round))
			if err := d.Unbind(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if !errors.Is(lateAdd, sever.ErrNoDevice) {
			t.Errorf("round %d: AddResource while the binding ends (failed Probe %v): %v, want ENODEV", round, fail, lateAdd)
		}
		checkUndo(t, d, fmt.Sprintf("round %d: after the binding's end", round))
		add(d, fmt.Sprintf("own%d", round+2))
		checkUndo(t, d, fmt.Sprintf("round %d: unbound again", round))
	}
	if err := d.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	for st := range nStages {
		if d.undo[st].Len() != 0 {
			t.Errorf("stage %d not empty after Unregister", st)
		}
	}
	if d.undoing.Len() != 0 {
		t.Error("entries still undoing after Unregister")
	}
	for _, v := range log.Quiesce(ctx) {
		t.Errorf("contract violation: %v", v)
	}
}

// TestUndoPutBackKeepsPushOrder: an entry taken by a removal while its
// device still takes pushes (a child's own Unregister takes the child's
// entry on its parent's list) and put back because its undo refused goes
// back to its place in push order — below the entries pushed meanwhile,
// a binding's among them — so the binding's end still finds exactly its
// own entries at the tail, and the device's removal undoes the rest
// newest first.
func TestUndoPutBackKeepsPushOrder(t *testing.T) {
	ctx := context.Background()
	_, d, log := undoRig(t)
	var severed []string
	add := func(d *Device, name string) {
		t.Helper()
		if _, err := d.AddSeverable(name, StageFiles, func(context.Context) error {
			severed = append(severed, name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	drv := undoDriver(t, d, func(ctx context.Context, d *Device) error {
		add(d, "bound1")
		add(d, "bound2")
		return nil
	})
	add(d, "own1")
	add(d, "own2")
	d.mu.Lock()
	taken := d.undo[StageFiles].Back() // own2, as a removal takes it
	d.takeLocked(taken)
	d.mu.Unlock()
	add(d, "own3")
	if err := d.Bind(ctx, drv); err != nil {
		t.Fatal(err)
	}
	d.putBack(taken) // its undo refused (ErrDeadlock)
	checkUndo(t, d, "after the put-back")
	var order []string
	for e := range d.undo[StageFiles].All() {
		if !strings.HasPrefix(e.name, "kernfs ") { // the device's own attribute directories
			order = append(order, e.name)
		}
	}
	if want := []string{"own1", "own2", "own3", "bound1", "bound2"}; !slices.Equal(order, want) {
		t.Fatalf("after the put-back the files stage holds %v, want %v", order, want)
	}
	if err := d.Unbind(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"bound2", "bound1"}; !slices.Equal(severed, want) {
		t.Fatalf("the unbind severed %v, want the binding's own, newest first: %v", severed, want)
	}
	checkUndo(t, d, "after the unbind")
	if err := d.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"bound2", "bound1", "own3", "own2", "own1"}; !slices.Equal(severed, want) {
		t.Fatalf("severed %v, want %v", severed, want)
	}
	for _, v := range log.Quiesce(ctx) {
		t.Errorf("contract violation: %v", v)
	}
}
