package sever_test

import (
	"context"
	"testing"

	"github.com/sever-dev/sever"
)

// idOf returns the ID of the object of type typ named name, from its
// creation.
func idOf(t *testing.T, es []sever.Event, typ, name string) uint64 {
	t.Helper()
	for _, e := range es {
		if e.Kind == sever.EventCreated && e.Type == typ && e.Object == name {
			return e.ID
		}
	}
	t.Fatalf("no %s %q was created", typ, name)
	return 0
}

// causes returns the Cause of each event of id but its creation, by kind.
func causes(es []sever.Event, id uint64) map[sever.EventKind]uint64 {
	out := map[sever.EventKind]uint64{}
	for _, e := range es {
		if e.ID == id && e.Kind != sever.EventCreated {
			out[e.Kind] = e.Cause
		}
	}
	return out
}

// TestSeverNamesItselfAsTheCauseOfWhatItEnds: a Scope's Sever is the
// Cause of exactly what it severs or ends — its children's severing, the
// hang-up of the shells it releases, its regions' sever — and of nothing
// else: not its own transitions, not a grandchild's shells (their cause is
// the child), not a shell its consumer closed first, not the frees at the
// consumers' later closes.
func TestSeverNamesItselfAsTheCauseOfWhatItEnds(t *testing.T) {
	var rec events
	opt := sever.WithObserver(&rec)
	p := sever.NewScope("p", nil, opt)
	c := sever.NewScope("p/c", nil, opt)
	ctx := context.Background()
	if err := p.Adopt(ctx, c); err != nil {
		t.Fatal(err)
	}
	r, err := sever.NewRegion("p: ring", make([]byte, 8), opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddRegion(r); err != nil {
		t.Fatal(err)
	}
	var open []*sever.Shell
	for _, s := range []*sever.Scope{p, p, c} {
		sh, err := s.Open(nil, func() {})
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, sh)
	}
	if err := open[0].Close(); err != nil { // closed by its consumer before the sever
		t.Fatal(err)
	}
	if err := p.Sever(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sh := range open[1:] {
		if err := sh.Close(); err != nil {
			t.Fatal(err)
		}
	}
	es := rec.all()
	pid, cid := idOf(t, es, "active", "p"), idOf(t, es, "active", "p/c")
	want := []struct {
		what string
		id   uint64
		kind sever.EventKind
		want uint64
	}{
		{"p's severing", pid, sever.EventSevering, 0},
		{"p's severed", pid, sever.EventSevered, 0},
		{"the child's severing", cid, sever.EventSevering, pid},
		{"the child's severed", cid, sever.EventSevered, pid},
		{"the hang-up of a shell closed before the sever", idOf(t, es, "waitqueue", "p: open 1"), sever.EventSevered, 0},
		{"the hang-up of p's open shell", idOf(t, es, "waitqueue", "p: open 2"), sever.EventSevered, pid},
		{"the free of p's open shell at its consumer's close", idOf(t, es, "waitqueue", "p: open 2"), sever.EventFreed, 0},
		{"the last put of p's open shell, its consumer's", idOf(t, es, "ref", "p: open 2"), sever.EventReleased, 0},
		{"the hang-up of the child's shell", idOf(t, es, "waitqueue", "p/c: open 1"), sever.EventSevered, cid},
		{"the region's sever", idOf(t, es, "region", "p: ring"), sever.EventSevered, pid},
		{"the region's free at the last close", idOf(t, es, "region", "p: ring"), sever.EventFreed, 0},
	}
	for _, w := range want {
		got, ok := causes(es, w.id)[w.kind]
		if !ok {
			t.Errorf("%s was not reported", w.what)
			continue
		}
		if got != w.want {
			t.Errorf("%s has Cause %d, want %d", w.what, got, w.want)
		}
	}
	// The parent's sever begins before the severs it causes.
	for _, e := range es {
		if e.ID == cid && e.Kind == sever.EventSevering {
			t.Error("the child's severing was reported before its parent's")
		}
		if e.ID == pid && e.Kind == sever.EventSevering {
			break
		}
	}
}

// TestSeverOfASeveringParentIsTheCause: what Adopt and AddRegion sever at
// once, because the scope has begun severing, names the scope as cause;
// an object whose IDs belong to another observer names none.
func TestSeverOfASeveringParentIsTheCause(t *testing.T) {
	var rec, other events
	opt := sever.WithObserver(&rec)
	ctx := context.Background()
	p := sever.NewScope("p", nil, opt)
	if err := p.Sever(ctx); err != nil {
		t.Fatal(err)
	}
	late := sever.NewScope("late", nil, opt)
	if err := p.Adopt(ctx, late); err == nil {
		t.Fatal("Adopt under a severed scope succeeded")
	}
	r, err := sever.NewRegion("ring", make([]byte, 8), opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddRegion(r); err == nil {
		t.Fatal("AddRegion to a severed scope succeeded")
	}
	foreign := sever.NewScope("foreign", nil, sever.WithObserver(&other))
	if err := p.Adopt(ctx, foreign); err == nil {
		t.Fatal("Adopt under a severed scope succeeded")
	}
	es := rec.all()
	pid := idOf(t, es, "active", "p")
	if got := causes(es, idOf(t, es, "active", "late"))[sever.EventSevering]; got != pid {
		t.Errorf("a child adopted late has severing Cause %d, want its parent's %d", got, pid)
	}
	if got := causes(es, idOf(t, es, "region", "ring"))[sever.EventSevered]; got != pid {
		t.Errorf("a region added late has severed Cause %d, want the scope's %d", got, pid)
	}
	oes := other.all()
	if got := causes(oes, idOf(t, oes, "active", "foreign"))[sever.EventSevering]; got != 0 {
		t.Errorf("a child observed by another observer has Cause %d, an ID of a series it does not share; want 0", got)
	}
}
