package sever_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime/trace"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// events is an Observer that keeps everything.
type events struct {
	mu sync.Mutex
	es []sever.Event
}

func (r *events) Observe(e sever.Event) {
	r.mu.Lock()
	r.es = append(r.es, e)
	r.mu.Unlock()
}

func (r *events) all() []sever.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.es)
}

// kinds lists the kinds and states reported about id, as "kind/state".
func (r *events) kinds(id uint64) []string {
	var out []string
	for _, e := range r.all() {
		if e.ID == id {
			out = append(out, e.Kind.String()+"/"+e.State)
		}
	}
	return out
}

func (r *events) find(k sever.EventKind, id uint64) (sever.Event, bool) {
	for _, e := range r.all() {
		if e.Kind == k && e.ID == id {
			return e, true
		}
	}
	return sever.Event{}, false
}

func TestObserverSeesActiveLifetimeWithCountWaitedFor(t *testing.T) {
	var obs events
	a := sever.NewActive("dev/a", sever.WithObserver(&obs))
	tok, ok := a.Enter()
	if !ok {
		t.Fatal("Enter of a live Active failed")
	}
	done := make(chan error)
	go func() { done <- a.Sever(context.Background()) }()
	<-a.Severed()
	if _, ok := a.Enter(); ok {
		t.Fatal("Enter succeeded while severing")
	}
	a.Exit(&tok)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	created, ok := obs.find(sever.EventCreated, 1)
	if !ok || created.Object != "dev/a" || created.Type != "active" || created.State != "live" {
		t.Fatalf("no created event for dev/a with id 1: %+v", obs.all())
	}
	want := []string{"created/live", "severing/severing", "refused/", "severed/severed"}
	if got := obs.kinds(1); !slices.Equal(got, want) {
		t.Fatalf("events of the Active = %v, want %v", got, want)
	}
	for _, k := range []sever.EventKind{sever.EventSevering, sever.EventSevered} {
		if e, _ := obs.find(k, 1); e.N != 1 {
			t.Errorf("%v reports N = %d, want the 1 access it waited for", k, e.N)
		}
	}
}

// Racing severers and exiting accessors must still report each state
// once and in order.
func TestObserverReportsEachStateOnceInOrderUnderRaces(t *testing.T) {
	var obs events
	opt := sever.WithObserver(&obs)
	const objects = 50
	var wg sync.WaitGroup
	for range objects {
		a := sever.NewActive("race", opt)
		toks := make([]sever.Token, 4)
		for i := range toks {
			toks[i], _ = a.Enter()
		}
		for i := range toks {
			wg.Go(func() { a.Exit(&toks[i]) })
		}
		for range 3 {
			wg.Go(func() { _ = a.Sever(context.Background()) })
		}
	}
	wg.Wait()
	for id := uint64(1); id <= objects; id++ {
		want := []string{"created/live", "severing/severing", "severed/severed"}
		if got := obs.kinds(id); !slices.Equal(got, want) {
			t.Fatalf("object %d: events %v, want %v", id, got, want)
		}
	}
}

func TestObserverSeesOwnerLoadedGoingGone(t *testing.T) {
	var obs events
	o := sever.NewOwner("mod", nil, sever.WithObserver(&obs))
	o.Get("user")
	done := make(chan error)
	go func() { done <- o.Unload(context.Background(), sever.UnloadForce) }()
	for o.State() != sever.OwnerGoing {
		time.Sleep(time.Millisecond)
	}
	o.Put("user")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{"created/live", "severing/going", "freed/gone"}
	if got := obs.kinds(1); !slices.Equal(got, want) {
		t.Fatalf("owner events %v, want %v", got, want)
	}
	if e, _ := obs.find(sever.EventSevering, 1); e.N != 1 {
		t.Errorf("going reports %d pins, want 1", e.N)
	}
}

func TestObserverSeesShellReleaseQueueAndRegion(t *testing.T) {
	var obs events
	opt := sever.WithObserver(&obs)
	q := sever.NewWaitQueue("file/q", opt)                        // id 1
	r := sever.NewRef("file/shell", q.Free, opt)                  // id 2
	reg, err := sever.NewRegion("file/mem", make([]byte, 8), opt) // id 3
	if err != nil {
		t.Fatal(err)
	}
	m, err := reg.Map()
	if err != nil {
		t.Fatal(err)
	}
	q.Sever()
	reg.Sever()
	r.Put(nil)
	if got, want := obs.kinds(1), []string{"created/live", "severed/severed", "freed/freed"}; !slices.Equal(got, want) {
		t.Errorf("wait queue events %v, want %v", got, want)
	}
	if got, want := obs.kinds(2), []string{"created/live", "released/released"}; !slices.Equal(got, want) {
		t.Errorf("ref events %v, want %v", got, want)
	}
	if got, want := obs.kinds(3), []string{"created/live", "severed/severed"}; !slices.Equal(got, want) {
		t.Errorf("region events before its last unmap %v, want %v", got, want)
	}
	if err := m.Unmap(); err != nil {
		t.Fatal(err)
	}
	if got, want := obs.kinds(3), []string{"created/live", "severed/severed", "freed/freed"}; !slices.Equal(got, want) {
		t.Errorf("region events %v, want %v", got, want)
	}
}

func TestObserveLogForwardsViolations(t *testing.T) {
	var obs events
	var l check.Log
	sever.ObserveLog(&l, &obs)
	l.Record(check.Violation{Class: check.UseAfterFree, Object: "x", Detail: "read after free"})
	es := obs.all()
	if len(es) != 1 || es[0].Kind != sever.EventViolation || es[0].Object != "x" || es[0].Detail != "use after free: read after free" {
		t.Fatalf("forwarded %+v, want one violation about x", es)
	}
}

func TestNoObserverNoLifeline(t *testing.T) {
	if trace.IsEnabled() {
		t.Skip("a runtime/trace recording is on: lifelines exist for it")
	}
	if l := sever.NewLifeline("scope", "s", "live"); l != nil {
		t.Fatal("NewLifeline without an observer returned a Lifeline")
	}
	var l *sever.Lifeline
	l.Emit(sever.Event{Kind: sever.EventSevered}) // must not panic
	l.StartRegion("x")()
	l.End()
}

// With an observer set, Enter and Exit still allocate nothing and report
// nothing: the observer costs the fast path nothing.
func TestObserverLeavesEnterExitAlone(t *testing.T) {
	var obs events
	a := sever.NewActive("fast", sever.WithObserver(&obs))
	allocs := testing.AllocsPerRun(100, func() {
		tok, _ := a.Enter()
		a.Exit(&tok)
	})
	if allocs != 0 {
		t.Errorf("Enter+Exit with an observer allocates %.1f times", allocs)
	}
	if n := len(obs.all()); n != 1 {
		t.Errorf("Enter+Exit reported %d events beyond creation", n-1)
	}
}

// A primitive built on the core reports through NewLifeline and gets IDs
// from the same sequence as the core's objects.
func TestLifelineForPrimitivesBuiltOnTheCore(t *testing.T) {
	var obs events
	opt := sever.WithObserver(&obs)
	a := sever.NewActive("scope/a", opt)
	l := sever.NewLifeline("scope", "scope/s", "live", opt)
	if l.ID() != 2 {
		t.Fatalf("second object got ID %d, want 2", l.ID())
	}
	l.Emit(sever.Event{Kind: sever.EventSevered, State: "severed", N: 3})
	l.Emit(sever.Event{Kind: sever.EventSevering, State: "severing"}) // late: dropped
	l.Emit(sever.Event{Kind: sever.EventReleased, State: "released", Cause: 1})
	want := []string{"created/live", "severed/severed", "released/released"}
	if got := obs.kinds(2); !slices.Equal(got, want) {
		t.Fatalf("scope events %v, want %v", got, want)
	}
	if e, _ := obs.find(sever.EventReleased, 2); e.Cause != 1 || e.Type != "scope" {
		t.Errorf("released event %+v lost its cause or type", e)
	}
	_ = a
}

// When a runtime/trace recording is on, objects are tasks, drains are
// regions and violations are logs.
func TestRuntimeTraceGetsTasksRegionsAndLogs(t *testing.T) {
	if trace.IsEnabled() {
		t.Skip("a runtime/trace recording is already on")
	}
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skip("cannot start runtime/trace:", err)
	}
	var l check.Log
	a := sever.NewActive("traced/node-7", sever.WithLog(&l))
	tok, _ := a.Enter()
	go func() { time.Sleep(5 * time.Millisecond); a.Exit(&tok) }()
	_ = a.Sever(context.Background())
	l.Record(check.Violation{Class: check.CallbackAfterSever, Object: "traced/shell-9", Detail: "show ran late"})
	r := sever.NewRef("traced/shell-9", func() {})
	r.Put(nil)
	sever.TraceRegion(context.Background(), "sever probe")()
	trace.Stop()
	for _, s := range []string{"sever.active", "traced/node-7", "sever drain", "sever violation", "show ran late",
		"sever.ref", "traced/shell-9", "release", "sever probe"} {
		if !bytes.Contains(buf.Bytes(), []byte(s)) {
			t.Errorf("the execution trace does not mention %q", s)
		}
	}
}

func ExampleWithObserver() {
	var obs events
	a := sever.NewActive("gpiochip0", sever.WithObserver(&obs))
	_ = a.Sever(context.Background())
	_ = a.Do(func() error { return nil }) // refused
	for _, e := range obs.all() {
		fmt.Println(e.ID, e.Type, e.Object, e.Kind, e.State)
	}
	// Output:
	// 1 active gpiochip0 created live
	// 1 active gpiochip0 severing severing
	// 1 active gpiochip0 severed severed
	// 1 active gpiochip0 refused
}

// A primitive built on the core — here a made-up "scope" — reports its
// lifetime through a Lifeline, and every observer and exporter shows it
// like the core's own objects.
func ExampleNewLifeline() {
	var obs events
	opts := []sever.Option{sever.WithObserver(&obs)}
	life := sever.NewLifeline("scope", "usb1/1-1", "live", opts...)
	life.Emit(sever.Event{Kind: sever.EventSevering, State: "severing", N: 2})
	life.Emit(sever.Event{Kind: sever.EventRefused, Detail: "call refused"})
	life.Emit(sever.Event{Kind: sever.EventSevered, State: "severed"})
	life.Emit(sever.Event{Kind: sever.EventFreed, State: "freed"})
	for _, e := range obs.all() {
		fmt.Println(e.Type, e.Object, e.Kind, e.State, e.N)
	}
	// Output:
	// scope usb1/1-1 created live 0
	// scope usb1/1-1 severing severing 2
	// scope usb1/1-1 refused  0
	// scope usb1/1-1 severed severed 2
	// scope usb1/1-1 freed freed 0
}
