package lifetrace_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/lifetrace"
)

// device is one scope of the cause test and the IDs of everything its
// Sever should name as caused: its own scope's ID (its Active's, which
// reports its sever), and the objects made for it (its shells' wait queues
// and refs, its region, its child scope's Active).
type device struct {
	s     *sever.Scope
	id    uint64          // the scope's ID
	owned map[uint64]bool // every object made for the device, its own included
	child uint64          // the child scope's ID, whose sever the device's causes
	shell map[uint64]bool // its shells' wait queues: hung up by the sever
	files []*sever.Shell
}

// TestFlowsConnectEachReleaseToItsOwnScopesSever: a guess from names and
// times links a release to the wrong sever when objects share a name
// prefix and are severed close together — here a device "dev1" whose
// removal waits for a call in flight, a re-plugged "dev1" (same name)
// removed while it waits, and a "dev10" — so the old heuristic, which took
// the latest sever begun of the longest matching name, drew the first
// dev1's hang-ups from the second's sever. Every flow must go from a
// scope's sever to an object of that same scope, and every object the
// core knows a Sever caused must get its flow.
func TestFlowsConnectEachReleaseToItsOwnScopesSever(t *testing.T) {
	rec := lifetrace.NewRecorder(0)
	opt := sever.WithObserver(rec)
	seen := 0
	created := func() []sever.Event { // the creations since the last call
		var out []sever.Event
		rs := rec.Records()
		for _, r := range rs[seen:] {
			if r.Kind == sever.EventCreated {
				out = append(out, r.Event)
			}
		}
		seen = len(rs)
		return out
	}
	newDevice := func(name string) *device {
		d := &device{owned: map[uint64]bool{}, shell: map[uint64]bool{}}
		created()
		d.s = sever.NewScope(name, nil, opt)
		for _, e := range created() {
			d.id = e.ID
			d.owned[e.ID] = true
		}
		child := sever.NewScope(name+"/value", nil, opt)
		if err := d.s.Adopt(context.Background(), child); err != nil {
			t.Fatal(err)
		}
		for _, e := range created() {
			d.child = e.ID
			d.owned[e.ID] = true
		}
		r, err := sever.NewRegion(name+": ring", make([]byte, 64), opt)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.s.AddRegion(r); err != nil {
			t.Fatal(err)
		}
		for _, e := range created() {
			d.owned[e.ID] = true
		}
		for range 2 {
			sh, err := d.s.Open(nil, func() {})
			if err != nil {
				t.Fatal(err)
			}
			d.files = append(d.files, sh)
			for _, e := range created() {
				d.owned[e.ID] = true
				if e.Type == "waitqueue" {
					d.shell[e.ID] = true
				}
			}
		}
		return d
	}

	first := newDevice("dev1")
	var tok sever.Token
	if !first.s.Enter(&tok) { // a call in flight: first's drain waits for it
		t.Fatal("Enter of a live scope failed")
	}
	done := make(chan error, 1)
	go func() { done <- first.s.Sever(context.Background()) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if begun(rec, first.id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first dev1's sever never began")
		}
	}
	second := newDevice("dev1") // re-plugged under the same name
	tenth := newDevice("dev10")
	for _, d := range []*device{second, tenth} {
		if err := d.s.Sever(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	first.s.Exit(&tok) // the first's drain ends: its hang-ups come after the others' severs
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	devs := []*device{first, second, tenth}
	for _, d := range devs {
		for _, f := range d.files {
			if err := f.Close(); err != nil {
				t.Errorf("close after sever: %v; want nil", err)
			}
		}
	}

	recs := rec.Records()
	tl := lifetrace.Build(recs)
	ownerOf := map[uint64]*device{}
	for _, d := range devs {
		for id := range d.owned {
			ownerOf[id] = d
		}
	}
	flowed := map[uint64]uint64{} // caused object → its flow's source
	for _, f := range tl.Flows {
		to, from := ownerOf[f.To.ID], ownerOf[f.From.ID]
		if to == nil || from == nil || to != from {
			t.Errorf("flow from %q (id %d) to %q (id %d) crosses devices", f.From.Object, f.From.ID, f.To.Object, f.To.ID)
			continue
		}
		if f.From.ID != to.id { // the child has no files: every cause is the device's scope
			t.Errorf("flow to %q (id %d) comes from id %d, want its scope's sever (id %d)", f.To.Object, f.To.ID, f.From.ID, to.id)
		}
		if f.ToT < f.FromT {
			t.Errorf("flow to %q ends before its sever began", f.To.Object)
		}
		flowed[f.To.ID] = f.From.ID
	}
	for _, d := range devs {
		for id := range d.shell {
			if flowed[id] != d.id {
				t.Errorf("%s (id %d): the hang-up of shell queue %d has no flow from its scope's sever", d.s.Name(), d.id, id)
			}
		}
		if flowed[d.child] != d.id {
			t.Errorf("%s: its child scope's sever has no flow from it", d.s.Name())
		}
	}
	for _, r := range recs {
		if r.Cause != 0 && ownerOf[r.ID] != ownerOf[r.Cause] {
			t.Errorf("event %v of %q (id %d) names cause %d, a sever of another device", r.Kind, r.Object, r.ID, r.Cause)
		}
	}
	var buf bytes.Buffer
	if err := lifetrace.WriteChrome(&buf, lifetrace.Run{Name: "dev1 dev1 dev10", Records: recs}); err != nil {
		t.Fatal(err)
	}
	if err := lifetrace.Validate(buf.Bytes()); err != nil {
		t.Fatalf("the trace does not load back: %v", err)
	}
}

// begun reports whether the records hold the severing of object id.
func begun(rec *lifetrace.Recorder, id uint64) bool {
	for _, r := range rec.Records() {
		if r.ID == id && r.Kind == sever.EventSevering {
			return true
		}
	}
	return false
}
