package sever

import (
	"context"
	"fmt"
	"runtime/trace"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
)

// An Observer receives the lifetime events of the primitives made with
// WithObserver: each object's creation, its state changes as named in its
// type's doc diagram, the calls it refused, and — through ObserveLog — the
// violations a check.Log records.
//
// Observe is called synchronously on the goroutine that caused the event,
// possibly concurrently with itself, possibly inside a provider callback,
// a Sever or an Unload, and possibly while the object holds a lock of its
// own. It must not block, must not call back into the object the event is
// about, and must not retain the Event past the call unless it copies it
// (an Event holds no pointers into the object, so a copy is safe to keep).
//
// Events of one object arrive in the order of its state diagram: a
// transition reported late (after a later state was reported) is dropped,
// never delivered out of order. Events of different objects are ordered
// only by whatever happened-before their causes had.
type Observer interface {
	Observe(Event)
}

// EventKind is what an Event reports.
//
// An object reports Created once, then the transitions its state diagram
// has, each at most once and in this order: Severing, Severed, Released,
// Freed (a type skips the ones it does not have). Refused, Violation and
// Note are instants and may come at any time.
type EventKind uint8

const (
	// EventCreated: the object was made; State is its first state
	// ("live"). For an Owner this is the module being loaded.
	EventCreated EventKind = iota + 1
	// EventSevering: removal began; no new call enters from now on. N is
	// the number of calls inside (Active) or pins held (Owner, whose
	// State is "going") at that moment: what the removal has to wait for.
	EventSevering
	// EventSevered: removal finished; no provider code runs through the
	// object now or later. N is the count the sever waited for (as
	// reported by EventSevering; 0 if it did not wait). A WaitQueue's or
	// Region's Sever reports it directly, without EventSevering.
	EventSevered
	// EventReleased: a release ran — a Ref's release function at its last
	// Put, or a per-open release reported by the layer that runs it. The
	// object's life is over.
	EventReleased
	// EventFreed: memory the framework owned was given back (a WaitQueue's
	// Free, a Region's free) or code went away (an Owner's exit ran; State
	// "gone"). The object's life is over.
	EventFreed
	// EventRefused: a call was refused because the object is severing or
	// severed (an Enter that failed).
	EventRefused
	// EventViolation: a check.Log observed with ObserveLog recorded a
	// breach of the contract about Object; Detail is its text.
	EventViolation
	// EventNote: a remark from a layer above the core (a scenario step, a
	// driver entering provider code), for timelines. ID is 0 unless the
	// note is about an object with a Lifeline.
	EventNote
)

var eventKindNames = [...]string{
	EventCreated:   "created",
	EventSevering:  "severing",
	EventSevered:   "severed",
	EventReleased:  "released",
	EventFreed:     "freed",
	EventRefused:   "refused",
	EventViolation: "violation",
	EventNote:      "note",
}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventKindNames) {
		return eventKindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one lifetime event. It holds only values: an Observer may keep
// it.
type Event struct {
	Kind EventKind
	// ID identifies the object among every object made with the same
	// WithObserver option (1, 2, 3, … in order of creation); 0 for events
	// about no object with a Lifeline (violations, most notes).
	ID uint64
	// Type is the object's primitive: "active", "ref", "owner",
	// "waitqueue", "region", or the name a primitive built on the core
	// gave NewLifeline ("scope", "shell", "call").
	Type string
	// Object is the object's name, as given to its constructor (a path:
	// "kernfs: /devices/usb1/1-1/value").
	Object string
	// State is the state entered, named as in the type's doc diagram
	// ("live", "severing", "severed", "going", "gone", "released",
	// "freed"); "" for instants, except that an EventNote may carry the
	// note's kind as the layer above names it ("step", "entered").
	State string
	// N is the count of EventSevering and EventSevered; 0 otherwise.
	N int
	// Cause is, for a state transition caused by another object's sever,
	// that object's ID; 0 otherwise. The core fills it exactly: a Scope's
	// Sever is the cause — under the ID of the scope's Active, whose
	// lifeline reports the scope's own severing and severed — of the
	// severing and severed of each child scope it severs (a late Adopt's
	// included), of the hang-up (Severed) of the wait queue of each shell
	// it releases, of that shell's free (its Ref's Released, its queue's
	// Freed) if the Sever dropped its last reference, and of the Severed
	// of each region it severs, and its Freed if no user was left. An
	// object severed by a Sever call of its own, or ended by a consumer's
	// Close, has no Cause. A layer above the core may report one it knows
	// by setting Cause in Lifeline.Emit.
	Cause uint64
	// Detail says more, in a sentence fragment.
	Detail string
}

// WithObserver reports the lifetime events of every primitive made with
// these options to o (see Observer). Objects made with the same
// WithObserver value get distinct IDs. WithObserver(nil) observes nothing.
//
// Without WithObserver nothing is reported and nothing is paid: an
// object's constructor tests one pointer, and Enter and Exit are not
// touched at all — a refused Enter, already on the slow path, tests it
// once more.
func WithObserver(o Observer) Option {
	if o == nil {
		return func(*options) {}
	}
	h := &observerHook{o: o}
	return func(opts *options) { opts.observer = h }
}

// ObserveLog forwards every violation l records from now on to o as an
// EventViolation whose Object is the violation's object and whose Detail
// is its class and detail. Nil l or o does nothing.
func ObserveLog(l *check.Log, o Observer) {
	if l == nil || o == nil {
		return
	}
	l.Observe(func(v check.Violation) {
		o.Observe(Event{Kind: EventViolation, Object: v.Object, Detail: v.Class.String() + ": " + v.Detail})
	})
}

// observerHook is one WithObserver value: the observer and the counter of
// the IDs it hands out.
type observerHook struct {
	o    Observer
	next atomic.Uint64
}

// A Lifeline is one object's line to its observer and to Go's execution
// tracer. A primitive makes one at construction with NewLifeline and
// reports its lifetime through it; the core's own primitives do, and so
// may a primitive built on the core (a scope, a shell, a call), which then
// appears in every exporter with no change to them.
//
// NewLifeline returns nil — and every method of a nil Lifeline does
// nothing — when the options carry no observer and no runtime/trace
// recording is on: an unobserved object pays one pointer test per event
// site.
//
// When a runtime/trace recording is on at construction, the object's life
// is a trace task (type "sever."+typ, the object's name logged in it),
// ended by its last state (Released, Freed, or Severed for an Active, whose
// life ends there); StartRegion's regions belong to that task.
type Lifeline struct {
	obs  Observer      // nil: runtime/trace only
	hook *observerHook // the WithObserver value the ID belongs to; nil with obs
	id   uint64
	typ  string
	name string
	ctx  context.Context // the task's context; nil unless tracing was on at creation
	task *trace.Task

	mu     sync.Mutex
	last   EventKind // the last state transition reported
	waited int       // N of EventSevering
	cause  uint64    // the Cause of the transitions reported now (see causedBy)
}

// NewLifeline reports the creation of an object of primitive typ named name
// in state state to the observer among opts, and returns the object's
// Lifeline; nil if there is no observer and runtime/trace is off.
func NewLifeline(typ, name, state string, opts ...Option) *Lifeline {
	o := buildOptions(opts)
	return o.lifeline(typ, name, state)
}

func (o *options) lifeline(typ, name, state string) *Lifeline {
	tracing := trace.IsEnabled()
	if o.observer == nil && !tracing {
		return nil
	}
	l := &Lifeline{typ: typ, name: name}
	if o.observer != nil {
		l.obs, l.hook = o.observer.o, o.observer
		l.id = l.hook.next.Add(1)
	}
	if tracing {
		l.ctx, l.task = trace.NewTask(context.Background(), "sever."+typ)
		trace.Log(l.ctx, "object", name)
	}
	l.Emit(Event{Kind: EventCreated, State: state})
	return l
}

// ID returns the object's ID (0 for a nil Lifeline or one without an
// observer).
func (l *Lifeline) ID() uint64 {
	if l == nil {
		return 0
	}
	return l.id
}

// Emit reports e about the object: Emit fills in e's ID, Type and Object.
// A state transition (Severing, Severed, Released, Freed) is reported only
// if no later one was: each at most once, in order; a Severed whose N is 0
// carries the N of the Severing before it; one whose Cause is 0 carries
// the cause of the sever running it, if a sever of the core set one.
// Released and Freed end the object's runtime/trace task, as End does.
// Emit on a nil Lifeline does nothing.
func (l *Lifeline) Emit(e Event) {
	if l == nil {
		return
	}
	e.ID, e.Type, e.Object = l.id, l.typ, l.name
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e.Kind {
	case EventSevering, EventSevered, EventReleased, EventFreed:
		if e.Kind <= l.last {
			return
		}
		l.last = e.Kind
		switch e.Kind {
		case EventSevering:
			l.waited = e.N
		case EventSevered:
			if e.N == 0 {
				e.N = l.waited
			}
		}
		if e.Cause == 0 {
			e.Cause = l.cause
		}
	}
	if l.ctx != nil && e.Kind != EventCreated && trace.IsEnabled() {
		trace.Log(l.ctx, e.Kind.String(), e.State+" "+e.Detail)
	}
	if l.obs != nil {
		l.obs.Observe(e)
	}
	if e.Kind == EventReleased || e.Kind == EventFreed {
		l.endLocked()
	}
}

// causedBy runs fn, the one call by which a severer severs or ends l's
// object (a child's Sever, a wait queue's hang-up, a region's Sever), with
// the state transitions l reports meanwhile attributed to the sever of
// cause's object:
//
//	q.life.causedBy(s.a.life, q.Sever)
//
// A transition another goroutine reports during fn is attributed to cause
// too: one that raced with the sever's own step (a Close hanging up the
// same queue), never a later one. Brackets nest; each restores the cause
// in force before it. A nil cause, or one whose ID is of another
// WithObserver value's series, changes nothing. Nil l just runs fn.
func (l *Lifeline) causedBy(cause *Lifeline, fn func()) {
	if l == nil || l.hook == nil {
		fn()
		return
	}
	l.mu.Lock()
	prev := l.cause
	if cause != nil && cause.hook == l.hook {
		l.cause = cause.id
	}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.cause = prev
		l.mu.Unlock()
	}()
	fn()
}

// End ends the object's runtime/trace task, if it has one; later calls do
// nothing.
func (l *Lifeline) End() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.endLocked()
	l.mu.Unlock()
}

func (l *Lifeline) endLocked() {
	if l.task != nil {
		l.task.End()
		l.task = nil
	}
}

// StartRegion begins a runtime/trace region named what (a step of the
// object's life: "drain", "release") on the calling goroutine, inside the
// object's task if it has one, and returns the function that ends it,
// which the same goroutine must call. When tracing is off it does nothing
// and returns a function that does nothing. A nil Lifeline is allowed.
func (l *Lifeline) StartRegion(what string) (end func()) {
	if !trace.IsEnabled() {
		return func() {}
	}
	ctx := context.Background()
	if l != nil && l.ctx != nil {
		ctx = l.ctx
	}
	return trace.StartRegion(ctx, what).End
}

// TraceRegion begins a runtime/trace region named what on the calling
// goroutine, in ctx's task if it has one, and returns the function that
// ends it, which the same goroutine must call. With no recording on it does
// nothing and returns a function that does nothing. It is for the steps
// packages above the core take on an object's behalf (a per-open release,
// a probe), so `go tool trace` shows them next to the core's drains.
func TraceRegion(ctx context.Context, what string) (end func()) {
	if !trace.IsEnabled() {
		return func() {}
	}
	return trace.StartRegion(ctx, what).End
}
