package sim

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/sever-dev/sever"
)

// Kind is what a trace event records. The lifetime kinds follow one object
// through the model of DESIGN.md: entered (provider code began running for
// a caller), severed (its removal began: no new entry), drained (its removal
// finished: no provider code runs now or later), released (a per-open
// release ran), freed (memory or state was given back), unloaded (a
// module's exit ran).
type Kind string

// The kinds of trace events.
const (
	KindStep      Kind = "step"      // a scenario step: what a process or the operator did
	KindLoaded    Kind = "loaded"    // a module was inserted
	KindEntered   Kind = "entered"   // provider code began running for a caller
	KindSevered   Kind = "severed"   // a removal began: no new entry into the object
	KindDrained   Kind = "drained"   // a removal finished: nothing of the provider runs now or later
	KindReleased  Kind = "released"  // a per-open release ran
	KindFreed     Kind = "freed"     // memory or provider state was given back
	KindUnloaded  Kind = "unloaded"  // a module's exit function ran
	KindViolation Kind = "violation" // the checker recorded a breach of the contract
	KindWatchdog  Kind = "watchdog"  // a removal has waited long for calls in flight
)

// Event is one line of a machine's trace.
type Event struct {
	Seq     int           `json:"seq"`
	T       time.Duration `json:"t_ns"` // since the machine was made
	Machine string        `json:"machine"`
	Kind    Kind          `json:"kind"`
	Object  string        `json:"object"`
	Detail  string        `json:"detail,omitempty"`
}

// Trace records a machine's lifetime events in the order they happened.
// Drivers of the simulated machine and scenario steps record into it; the
// violation log feeds it too (see Machine). A Trace is safe for concurrent
// use. Recording is cheap (a lock and an append) and never blocks on a
// reader.
//
// The core packages emit no events of their own: a trace shows what the
// simulated drivers and the scenario saw around each core call, not the
// core's internal steps.
type Trace struct {
	machine string
	start   time.Time
	mu      sync.Mutex
	events  []Event
	obs     sever.Observer // WithObserver: gets every event but violations as a note
}

func newTrace(machine string) *Trace {
	return &Trace{machine: machine, start: time.Now()}
}

// Record appends an event of kind about object. It may be called from any
// goroutine, including inside callbacks and violation observers.
func (t *Trace) Record(kind Kind, object, detail string) {
	if t == nil {
		return
	}
	now := time.Since(t.start)
	t.mu.Lock()
	t.events = append(t.events, Event{Seq: len(t.events) + 1, T: now, Machine: t.machine, Kind: kind, Object: object, Detail: detail})
	t.mu.Unlock()
	if t.obs != nil && kind != KindViolation {
		t.obs.Observe(sever.Event{Kind: sever.EventNote, Object: object, State: string(kind), Detail: detail})
	}
}

// Events returns a copy of the events recorded so far, oldest first.
func (t *Trace) Events() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Event(nil), t.events...)
}

// WriteJSON writes events to w as JSON lines, one event per line.
func WriteJSON(w io.Writer, events []Event) error {
	enc := json.NewEncoder(w)
	for _, e := range events {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}
