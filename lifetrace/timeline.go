package lifetrace

import (
	"strings"
	"time"

	"github.com/sever-dev/sever"
)

// Timeline is a run's records arranged for display: a lane per object, the
// spans of its states, its marks, and the arrows from severs to what they
// caused. The Chrome writer and the HTML timeline both draw one.
type Timeline struct {
	Lanes []*Lane
	Flows []Flow
	End   time.Duration // the last record's time: open spans end here
}

// Lane is one object's life, as far as the records show it. A Lane with
// ID 0 collects the marks that name no known object: "checker" the
// violations, "notes" everything else.
type Lane struct {
	ID     uint64
	Type   string
	Object string
	States []Span // one per state, in order, never overlapping
	Sever  *Span  // from severing to severed ("sever"), if it was severed
	Ends   []Span // releases and frees: zero-length spans where its life ended
	Marks  []Mark // instants: refused calls, violations, notes

	// Removal reports that its Sever began with EventSevering: a removal
	// that waits for calls inside, and can cause the severs of others.
	Removal bool
}

// Span is an interval of a lane. Open means it had not ended by the last
// record (End is then Timeline.End).
type Span struct {
	Name       string
	Start, End time.Duration
	N          int
	Open       bool
}

// Mark is an instant on a lane.
type Mark struct {
	Kind   sever.EventKind
	T      time.Duration
	Note   string // an EventNote's kind, as the layer above names it ("step", "entered")
	Detail string
}

// Flow is an arrow from the sever of one lane to an event it caused on
// another: From's Sever start to the To lane's end or severed at ToT.
//
// Flows come only from the events' Cause, which the core fills exactly (a
// scope's Sever names itself on the severing of its children, the hang-up
// of the shells it releases and the sever of its regions; see
// sever.Event): a lane's first event with a Cause is linked to the lane of
// that ID, if the records hold its sever. Nothing is guessed from names or
// times, so an event reported without a Cause — by code outside the core,
// or a close by a consumer — gets no arrow, and two objects whose names
// share a prefix, severed at the same moment, never get each other's.
type Flow struct {
	From, To *Lane
	FromT    time.Duration
	ToT      time.Duration
}

// Build arranges records (oldest first, as Recorder.Records returns them)
// into a Timeline. Records of objects whose creation was dropped by a
// bounded Recorder start their lane at their first record kept.
func Build(recs []Record) *Timeline {
	tl := &Timeline{}
	byID := map[uint64]*Lane{}
	byName := map[string]*Lane{} // the newest lane of each object name
	var checker, notes *Lane
	lane := func(e sever.Event) *Lane {
		l := byID[e.ID]
		if l == nil {
			l = &Lane{ID: e.ID, Type: e.Type, Object: e.Object}
			byID[e.ID] = l
			tl.Lanes = append(tl.Lanes, l)
		}
		if old := byName[e.Object]; old == nil || !isShellPart(l.Type) || isShellPart(old.Type) {
			byName[e.Object] = l
		}
		return l
	}
	type cause struct {
		lane *Lane
		t    time.Duration
		id   uint64
	}
	var caused []cause // per lane, its first event with a Cause
	seenCause := map[*Lane]bool{}
	for _, r := range recs {
		if r.T > tl.End {
			tl.End = r.T
		}
		e := r.Event
		if e.ID == 0 {
			l := byName[e.Object]
			if l == nil {
				l = findByName(tl.Lanes, e.Object)
			}
			if l == nil {
				if e.Kind == sever.EventViolation {
					if checker == nil {
						checker = &Lane{Type: "checker", Object: "violations"}
						tl.Lanes = append(tl.Lanes, checker)
					}
					l = checker
				} else {
					if notes == nil {
						notes = &Lane{Type: "notes", Object: "steps"}
						tl.Lanes = append(tl.Lanes, notes)
					}
					l = notes
				}
			}
			l.Marks = append(l.Marks, Mark{Kind: e.Kind, T: r.T, Note: e.State, Detail: markText(e)})
			continue
		}
		l := lane(e)
		if e.Cause != 0 && !seenCause[l] {
			switch e.Kind {
			case sever.EventSevering, sever.EventSevered, sever.EventReleased, sever.EventFreed:
				seenCause[l] = true
				caused = append(caused, cause{l, r.T, e.Cause})
			}
		}
		switch e.Kind {
		case sever.EventCreated:
			l.open(e.State, r.T)
		case sever.EventSevering:
			l.open(e.State, r.T)
			l.Sever = &Span{Name: "sever", Start: r.T, End: r.T, N: e.N, Open: true}
			l.Removal = true
		case sever.EventSevered:
			l.open(e.State, r.T)
			if l.Sever == nil {
				l.Sever = &Span{Name: "sever", Start: r.T}
			}
			l.Sever.End, l.Sever.N, l.Sever.Open = r.T, e.N, false
		case sever.EventReleased, sever.EventFreed:
			l.close(r.T)
			l.Ends = append(l.Ends, Span{Name: e.State, Start: r.T, End: r.T})
		default:
			l.Marks = append(l.Marks, Mark{Kind: e.Kind, T: r.T, Note: e.State, Detail: markText(e)})
		}
	}
	for _, l := range tl.Lanes {
		if n := len(l.States); n > 0 && l.States[n-1].Open {
			l.States[n-1].End = tl.End
		}
		if l.Sever != nil && l.Sever.Open {
			l.Sever.End = tl.End
		}
	}
	for _, c := range caused {
		from := byID[c.id]
		if from != nil && from != c.lane && from.Sever != nil && from.Sever.Start <= c.t {
			tl.Flows = append(tl.Flows, Flow{From: from, To: c.lane, FromT: from.Sever.Start, ToT: c.t})
		}
	}
	return tl
}

// open ends the current state span at t and begins state.
func (l *Lane) open(state string, t time.Duration) {
	l.close(t)
	l.States = append(l.States, Span{Name: state, Start: t, End: t, Open: true})
}

func (l *Lane) close(t time.Duration) {
	if n := len(l.States); n > 0 && l.States[n-1].Open {
		l.States[n-1].End, l.States[n-1].Open = t, false
	}
}

// isShellPart reports whether objects of type typ are parts of a shell
// that share their name with the node or device they belong to; a mark
// naming that object goes to the node's lane rather than theirs.
func isShellPart(typ string) bool {
	return typ == "waitqueue" || typ == "ref" || typ == "region"
}

// findByName finds the newest lane whose object n names: the same name
// after a type prefix ("kernfs: /x" for "/x").
func findByName(lanes []*Lane, n string) *Lane {
	if n == "" {
		return nil
	}
	for i := len(lanes) - 1; i >= 0; i-- {
		o := lanes[i].Object
		if lanes[i].ID != 0 && strings.HasSuffix(o, n) && (len(o) == len(n) || o[len(o)-len(n)-1] == ' ') {
			return lanes[i]
		}
	}
	return nil
}

func markText(e sever.Event) string {
	switch e.Kind {
	case sever.EventRefused:
		if e.Detail == "" {
			return "call refused"
		}
		return e.Detail
	case sever.EventViolation:
		return e.Detail
	}
	if e.Object != "" && e.ID == 0 {
		return e.Object + ": " + e.Detail
	}
	return e.Detail
}
