package lifetrace

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Validate parses data as a Chrome trace-event JSON object and checks what
// its consumers rely on and what WriteChrome promises: only the phases it
// writes (no "B"/"E" duration pairs, whose overlaps Perfetto rejects);
// every async begin ended by an end of the same name, id and category, with
// at most one slice open per id at a time; each async id belonging to one
// object and each object's track to one id; complete slices that do not
// overlap on one thread; every flow one start and one end, each bound to a
// complete slice on its thread enclosing its time, the end not before the
// start; and every event naming its object. It returns the first breach.
func Validate(data []byte) error {
	var ct ChromeTrace
	if err := json.Unmarshal(data, &ct); err != nil {
		return fmt.Errorf("not trace-event JSON: %w", err)
	}
	type thread struct{ pid, tid int }
	type asyncKey struct {
		pid     int
		cat, id string
	}
	open := map[asyncKey]*ChromeEvent{}
	idObject := map[string]string{}
	threadID := map[thread]string{}
	slices := map[thread][]ChromeEvent{}
	flows := map[string][]ChromeEvent{}
	for i := range ct.TraceEvents {
		e := &ct.TraceEvents[i]
		if e.Ph == "M" {
			continue
		}
		obj, _ := e.Args["object"].(string)
		if obj == "" {
			return fmt.Errorf("event %d (%s %q) names no object", i, e.Ph, e.Name)
		}
		th := thread{e.Pid, e.Tid}
		switch e.Ph {
		case "b", "e":
			if e.ID == "" {
				return fmt.Errorf("async event %d (%q) has no id", i, e.Name)
			}
			if o, ok := idObject[e.ID]; ok && o != obj {
				return fmt.Errorf("async id %s is used by %q and %q", e.ID, o, obj)
			}
			idObject[e.ID] = obj
			if id, ok := threadID[th]; ok && id != e.ID {
				return fmt.Errorf("object %q has async ids %s and %s", obj, id, e.ID)
			}
			threadID[th] = e.ID
			k := asyncKey{e.Pid, e.Cat, e.ID}
			if e.Ph == "b" {
				if b := open[k]; b != nil {
					return fmt.Errorf("async %q of %q begins at %vµs while %q is still open", e.Name, obj, e.Ts, b.Name)
				}
				open[k] = e
				continue
			}
			b := open[k]
			if b == nil {
				return fmt.Errorf("async end %q of %q at %vµs has no begin", e.Name, obj, e.Ts)
			}
			if b.Name != e.Name || e.Ts < b.Ts {
				return fmt.Errorf("async end %q at %vµs does not match begin %q at %vµs of %q", e.Name, e.Ts, b.Name, b.Ts, obj)
			}
			delete(open, k)
		case "X":
			if e.Dur == nil || *e.Dur < 0 {
				return fmt.Errorf("complete slice %q of %q has no or a negative duration", e.Name, obj)
			}
			slices[th] = append(slices[th], *e)
		case "i":
		case "s", "f":
			flows[e.ID] = append(flows[e.ID], *e)
		default:
			return fmt.Errorf("event %d has phase %q, which WriteChrome never writes", i, e.Ph)
		}
	}
	for k, b := range open {
		return fmt.Errorf("async %q (id %s) of %v begins and never ends", b.Name, k.id, b.Args["object"])
	}
	for th, xs := range slices {
		sort.SliceStable(xs, func(a, b int) bool { return xs[a].Ts < xs[b].Ts })
		for k := 0; k+1 < len(xs); k++ {
			if xs[k].Ts+*xs[k].Dur > xs[k+1].Ts {
				return fmt.Errorf("slices %q and %q overlap on thread %d of process %d", xs[k].Name, xs[k+1].Name, th.tid, th.pid)
			}
		}
	}
	encloses := func(e ChromeEvent) bool {
		for _, x := range slices[thread{e.Pid, e.Tid}] {
			if x.Ts <= e.Ts && e.Ts <= x.Ts+*x.Dur {
				return true
			}
		}
		return false
	}
	for id, fs := range flows {
		if len(fs) != 2 || fs[0].Ph != "s" || fs[1].Ph != "f" {
			return fmt.Errorf("flow %s is not one start followed by one end", id)
		}
		if fs[1].Ts < fs[0].Ts {
			return fmt.Errorf("flow %s ends before it starts", id)
		}
		for _, f := range fs {
			if !encloses(f) {
				return fmt.Errorf("flow %s %s at %vµs binds to no slice on thread %d", id, f.Ph, f.Ts, f.Tid)
			}
		}
	}
	return nil
}
