package lifetrace

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"time"
)

// Run is one run's records under the name its process gets in the viewer
// ("seed000 correct, seed 1").
type Run struct {
	Name    string
	Records []Record
}

// ChromeEvent is one event of the trace-event format, as WriteChrome
// writes it and as tests read it back. Times are in microseconds.
type ChromeEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   float64        `json:"ts"`
	Dur  *float64       `json:"dur,omitempty"`
	Pid  int            `json:"pid"`
	Tid  int            `json:"tid"`
	ID   string         `json:"id,omitempty"`
	S    string         `json:"s,omitempty"`  // scope of an instant: "t", thread
	Bp   string         `json:"bp,omitempty"` // binding point of a flow end: "e", enclosing slice
	Args map[string]any `json:"args,omitempty"`
}

// ChromeTrace is the JSON object WriteChrome writes.
type ChromeTrace struct {
	TraceEvents     []ChromeEvent `json:"traceEvents"`
	DisplayTimeUnit string        `json:"displayTimeUnit"`
}

// The categories of the events written.
const (
	CatLifetime = "lifetime" // async slices, one per state of an object
	CatSever    = "sever"    // slices on an object's track: its sever, its release or free
	CatMark     = "mark"     // instants: refused calls, violations, notes
	CatCause    = "cause"    // flow arrows from a sever to what it caused
)

// WriteChrome writes runs as one Chrome trace-event JSON object, each run
// a process (pid 1, 2, … in order). Every object is a thread of its run
// (named "type name") and an async track in category "lifetime" whose id
// is unique to the object across the whole file; state slices are async
// begin/end pairs ("b"/"e"), consecutive and never overlapping, so no
// track has overlapping slices; severs, releases and frees are complete
// slices ("X") that never overlap on one thread; flows ("s", "f" binding
// to the enclosing slice) go from a sever's slice to the slice of what it
// caused. Every event's args name the object.
func WriteChrome(w io.Writer, runs ...Run) error {
	ct := ChromeTrace{TraceEvents: []ChromeEvent{}, DisplayTimeUnit: "ms"}
	flowID := 0
	for i, run := range runs {
		pid := i + 1
		tl := Build(run.Records)
		ct.TraceEvents = append(ct.TraceEvents, ChromeEvent{Name: "process_name", Ph: "M", Pid: pid, Args: map[string]any{"name": run.Name}})
		tid := map[*Lane]int{}
		var evs []ChromeEvent
		for j, l := range tl.Lanes {
			t := j + 1
			tid[l] = t
			args := func() map[string]any { return map[string]any{"object": l.Object, "type": l.Type} }
			evs = append(evs,
				ChromeEvent{Name: "thread_name", Ph: "M", Pid: pid, Tid: t, Args: map[string]any{"name": l.Type + " " + l.Object}},
				ChromeEvent{Name: "thread_sort_index", Ph: "M", Pid: pid, Tid: t, Args: map[string]any{"sort_index": t}})
			aid := fmt.Sprintf("0x%x", uint64(pid)<<32|uint64(t))
			for _, s := range l.States {
				a := args()
				a["state"] = s.Name
				evs = append(evs,
					ChromeEvent{Name: s.Name, Cat: CatLifetime, Ph: "b", Ts: us(s.Start), Pid: pid, Tid: t, ID: aid, Args: a},
					ChromeEvent{Name: s.Name, Cat: CatLifetime, Ph: "e", Ts: us(s.End), Pid: pid, Tid: t, ID: aid, Args: args()})
			}
			// The thread's slices, clamped so none overlaps the next.
			var xs []Span
			if l.Sever != nil {
				xs = append(xs, *l.Sever)
			}
			xs = append(xs, l.Ends...)
			sort.SliceStable(xs, func(a, b int) bool { return xs[a].Start < xs[b].Start })
			for k, x := range xs {
				end := x.End
				if end == x.Start {
					end = x.Start + time.Microsecond
				}
				if k+1 < len(xs) && end > xs[k+1].Start {
					end = xs[k+1].Start
				}
				if end < x.Start {
					end = x.Start
				}
				d := us(end) - us(x.Start)
				// In float microseconds ts+d can round past the next
				// slice's ts (1.1 + (3.3-1.1) > 3.3): step d down until
				// the slice ends at or before end, as a reader computes it.
				for d > 0 && us(x.Start)+d > us(end) {
					d = math.Nextafter(d, 0)
				}
				a := args()
				if x.Name == "sever" {
					a["waited_for"] = x.N
				}
				evs = append(evs, ChromeEvent{Name: x.Name, Cat: CatSever, Ph: "X", Ts: us(x.Start), Dur: &d, Pid: pid, Tid: t, Args: a})
			}
			for _, m := range l.Marks {
				a := args()
				a["detail"] = m.Detail
				name := m.Kind.String()
				if m.Kind.String() == "note" {
					name = m.Detail
				}
				evs = append(evs, ChromeEvent{Name: name, Cat: CatMark, Ph: "i", S: "t", Ts: us(m.T), Pid: pid, Tid: t, Args: a})
			}
		}
		for _, f := range tl.Flows {
			flowID++
			id := fmt.Sprintf("0x%x", flowID)
			a := map[string]any{"object": f.From.Object, "caused": f.To.Object}
			evs = append(evs,
				ChromeEvent{Name: "caused", Cat: CatCause, Ph: "s", Ts: us(f.FromT), Pid: pid, Tid: tid[f.From], ID: id, Args: a},
				ChromeEvent{Name: "caused", Cat: CatCause, Ph: "f", Bp: "e", Ts: us(f.ToT), Pid: pid, Tid: tid[f.To], ID: id, Args: a})
		}
		sort.SliceStable(evs, func(a, b int) bool {
			if evs[a].Ph == "M" || evs[b].Ph == "M" {
				return evs[a].Ph == "M" && evs[b].Ph != "M"
			}
			return evs[a].Ts < evs[b].Ts
		})
		ct.TraceEvents = append(ct.TraceEvents, evs...)
	}
	enc := json.NewEncoder(w)
	return enc.Encode(ct)
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
