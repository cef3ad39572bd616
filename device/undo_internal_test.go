package device

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// checkUndo fails t unless d's undo list is well formed and keeps the
// invariant that makes every pop O(1) (see "The undo list"): in each
// stage, oldest first by seq, the device's own entries before the current
// binding's, no entry of another binding, and each binding's pending
// count exact.
func checkUndo(t *testing.T, d *Device, when string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for st := range nStages {
		l := &d.undo[st]
		var prev *undoEntry
		n, seenBinding := 0, false
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
				n++
			}
			prev = e
		}
		back := slices.Collect(l.Backward())
		slices.Reverse(back)
		if fwd := slices.Collect(l.All()); !slices.Equal(fwd, back) || l.Back() != prev || l.Len() != len(fwd) {
			t.Fatalf("%s: stage %d: the list read newest first, its Back or its Len disagrees with it read oldest first", when, st)
		}
		if d.bind != nil && d.bind.pending[st] != n {
			t.Errorf("%s: stage %d: the binding counts %d pending entries, the list holds %d", when, st, d.bind.pending[st], n)
		}
	}
}

// TestUndoListKeepsItsInvariant drives one device through the ways its
// scope changes — entries of its own, a binding, an unbind, a rebind, a
// Probe that fails after adding entries, drops in the middle — and checks
// the list after each step.
func TestUndoListKeepsItsInvariant(t *testing.T) {
	ctx := context.Background()
	log := &check.Log{}
	c := NewCore(t.Name(), log)
	bus, err := c.NewBus(BusConfig{Name: "platform"})
	if err != nil {
		t.Fatal(err)
	}
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
	drv := &Driver{Name: "drv", IDs: []string{"x"}, Probe: func(ctx context.Context, d *Device) error {
		add(d, "probe")
		checkUndo(t, d, "in Probe")
		if fail {
			return errors.New("probe fails")
		}
		return nil
	}}
	if err := bus.RegisterDriver(ctx, drv); err != nil {
		t.Fatal(err)
	}
	d, err := c.Register(ctx, Config{Name: "d", Bus: bus})
	if err != nil {
		t.Fatal(err)
	}
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
