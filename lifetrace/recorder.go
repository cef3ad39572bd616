// Package lifetrace records the lifetime events sever's primitives report
// to an Observer and writes them as Chrome trace-event JSON, the format
// ui.perfetto.dev and chrome://tracing open.
//
// A Recorder is the Observer: give it to a machine's primitives with
// sever.WithObserver (and to its check.Log with sever.ObserveLog), run,
// then pass its Records to WriteChrome. A Recorder made with a bound keeps
// only the newest events, so a long run (sever stress) can trace its last
// moments in fixed memory.
//
// What the JSON shows, per run (a process in the viewer):
//
//   - one track per object (a thread, named by the object's type and name:
//     "active kernfs: /devices/usb1/1-1/value"), holding its sever — a
//     slice from severing to severed — and the releases and frees that end
//     it, as slices;
//   - one async track per object (category "lifetime", id unique to the
//     object), holding a slice per lifetime state: live, severing,
//     severed for an Active; live, going for an Owner; …;
//   - instant events for refused calls, violations (with their text) and
//     notes (scenario steps);
//   - flow arrows from a sever to each release, sever or free it caused,
//     as the events' Cause says (never guessed from names or times);
//   - args naming the object on every event.
package lifetrace

import (
	"sync"
	"time"

	"github.com/sever-dev/sever"
)

// Record is one observed event and when it was observed, relative to the
// Recorder's start.
type Record struct {
	T time.Duration
	sever.Event
}

// Recorder is a sever.Observer that keeps the events it observes, in the
// order observed, with their times. It is safe for concurrent use; Observe
// takes a lock and appends, and never blocks on a reader.
type Recorder struct {
	start time.Time
	max   int

	mu      sync.Mutex
	recs    []Record // a ring of max records once full; plain append before
	next    int      // where the next record goes once the ring is full
	dropped int64
}

// NewRecorder returns a Recorder keeping at most max events — the newest
// ones — or every event if max is 0. A negative max panics.
func NewRecorder(max int) *Recorder {
	if max < 0 {
		panic("lifetrace: NewRecorder with a negative bound")
	}
	return &Recorder{start: time.Now(), max: max}
}

// Observe records e. It implements sever.Observer.
func (r *Recorder) Observe(e sever.Event) {
	t := time.Since(r.start)
	r.mu.Lock()
	if r.max == 0 || len(r.recs) < r.max {
		r.recs = append(r.recs, Record{T: t, Event: e})
	} else {
		r.recs[r.next] = Record{T: t, Event: e}
		r.next = (r.next + 1) % r.max
		r.dropped++
	}
	r.mu.Unlock()
}

// Note records an EventNote about object: a scenario step, a driver's
// remark. It may be called from any goroutine.
func (r *Recorder) Note(object, detail string) {
	r.Observe(sever.Event{Kind: sever.EventNote, Object: object, Detail: detail})
}

// Records returns the records kept, oldest first.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Record, 0, len(r.recs))
	out = append(out, r.recs[r.next:]...)
	return append(out, r.recs[:r.next]...)
}

// Dropped returns how many of the oldest records a bounded Recorder has
// let go.
func (r *Recorder) Dropped() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}
