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
// An event reported with a Cause is linked to that object. Without one, a
// sever (a WaitQueue's or Region's, which a remover runs for each file it
// releases) is linked to the removal that most likely ran it: the latest
// one, begun by then and drained at most causeWindow before, of an object
// whose name contains the severed one's (a node and its files). Releases
// and frees without a Cause are not linked: a shell's last put is usually
// its holder's close, not the removal.
type Flow struct {
	From, To *Lane
	FromT    time.Duration
	ToT      time.Duration
}

// causeWindow bounds how long after a drain a release counts as caused by
// it when the reporter gave no Cause: the remover releases the files left
// open right after its drain.
const causeWindow = 50 * time.Millisecond

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
	var caused []cause // per lane, the first event that ends or severs it
	seenEnd := map[*Lane]bool{}
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
			if !seenEnd[l] && !l.Removal {
				seenEnd[l] = true
				caused = append(caused, cause{l, r.T, e.Cause})
			}
		case sever.EventReleased, sever.EventFreed:
			l.close(r.T)
			l.Ends = append(l.Ends, Span{Name: e.State, Start: r.T, End: r.T})
			if !seenEnd[l] && e.Cause != 0 {
				seenEnd[l] = true
				caused = append(caused, cause{l, r.T, e.Cause})
			}
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
		var from *Lane
		if c.id != 0 {
			from = byID[c.id]
		} else {
			from = severerOf(tl.Lanes, c.lane, c.t)
		}
		if from != nil && from != c.lane && from.Sever != nil {
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

// severerOf finds the sever that most likely caused l's end at t: the
// latest sever, begun by t and drained no more than causeWindow before t,
// of an object whose name is a prefix of l's (a node and its open files,
// a device and its char device's files), preferring the longest name.
func severerOf(lanes []*Lane, l *Lane, t time.Duration) *Lane {
	var best *Lane
	for _, s := range lanes {
		if s == l || !s.Removal || s.Sever.Start > t {
			continue
		}
		if !s.Sever.Open && t-s.Sever.End > causeWindow {
			continue
		}
		if !namePrefix(s.Object, l.Object) {
			continue
		}
		if best == nil || len(s.Object) > len(best.Object) ||
			(len(s.Object) == len(best.Object) && s.Sever.Start > best.Sever.Start) {
			best = s
		}
	}
	return best
}

// namePrefix reports whether p names an object that contains the one named
// n: p is n, or a prefix of n ending where a path component or a
// qualifier of n begins.
func namePrefix(p, n string) bool {
	if p == "" || !strings.HasPrefix(n, p) {
		return false
	}
	if len(n) == len(p) {
		return true
	}
	switch n[len(p)] {
	case '/', ':', ' ', '(':
		return true
	}
	return false
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
