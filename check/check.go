// Package check records violations of sever's lifetime contract.
//
// A Log belongs to one value — a simulated machine, a test — never to the
// process, so two machines checked side by side keep separate verdicts. The
// core package reports into a Log; this package imports nothing of sever's.
//
// Three instruments feed the Log besides direct Record calls:
//
//   - Pending: a release that must run exactly once before quiesce
//     (ReleaseTwice on a second Done, ReleaseNeverRun at Quiesce).
//   - State: provider state that can be freed; any use after Free is
//     UseAfterFree, reported with the stack that freed it.
//   - Go: a goroutine the framework starts; one still running at Quiesce is
//     GoroutineLeft, reported with the stack that started it.
package check

import (
	"context"
	"fmt"
	"runtime"
	"runtime/trace"
	"sort"
	"strings"
	"sync"
)

// Class is the kind of a contract violation.
type Class int

const (
	// CallbackAfterSever: provider code ran after its node, device or
	// handle was severed.
	CallbackAfterSever Class = iota + 1
	// CallIntoGoneOwner: code of an unloaded owner (module) was called.
	CallIntoGoneOwner
	// ReleaseTwice: a release, free or put that must run once ran again.
	ReleaseTwice
	// ReleaseNeverRun: a release that must run had not run at quiesce.
	ReleaseNeverRun
	// UseAfterFree: state was used after it was freed.
	UseAfterFree
	// ReferenceAfterUnregister: a reference into provider state was still
	// held after the provider unregistered.
	ReferenceAfterUnregister
	// GoroutineLeft: a goroutine the framework started was still running at
	// quiesce.
	GoroutineLeft
	// SeverTimeout: a sever or drain did not finish by its deadline; the
	// violation lists who still held the object.
	SeverTimeout
	// DriverFault: provider code panicked; the framework recovered.
	DriverFault
	// Misuse: a primitive was used against its contract (an Exit of a
	// Token that is not inside, a Sever that would wait for itself); the
	// call changed nothing and the primitive stays correct.
	Misuse
)

var classNames = [...]string{
	CallbackAfterSever:       "callback after sever",
	CallIntoGoneOwner:        "call into gone owner",
	ReleaseTwice:             "release run twice",
	ReleaseNeverRun:          "release never run",
	UseAfterFree:             "use after free",
	ReferenceAfterUnregister: "reference after unregister",
	GoroutineLeft:            "goroutine left behind",
	SeverTimeout:             "sever past deadline",
	DriverFault:              "driver fault",
	Misuse:                   "misuse",
}

// Classes lists every Class in declaration order.
func Classes() []Class {
	cs := make([]Class, 0, len(classNames)-1)
	for c := CallbackAfterSever; int(c) < len(classNames); c++ {
		cs = append(cs, c)
	}
	return cs
}

func (c Class) String() string {
	if c > 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("check.Class(%d)", int(c))
}

// Violation is one recorded breach of the contract.
type Violation struct {
	Class   Class
	Object  string   // the object involved, by name (a path, a module, a device)
	Detail  string   // what happened, in a sentence fragment
	Stack   string   // where it happened
	Cause   string   // the earlier event that makes it a violation: where state was freed, where a goroutine started
	Holders []string // who still held the object, for ReferenceAfterUnregister and SeverTimeout
}

func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", v.Class, v.Object)
	if v.Detail != "" {
		b.WriteString(": " + v.Detail)
	}
	for _, h := range v.Holders {
		b.WriteString("\n\theld by " + strings.ReplaceAll(h, "\n", "\n\t\t"))
	}
	return b.String()
}

// Log is a violation log. The zero Log is ready to use. A Log is safe for
// concurrent use. A nil *Log panics on Record: code that reports without a
// checker treats a violation as a fatal bug.
type Log struct {
	mu         sync.Mutex
	violations []Violation
	pending    map[*Pending]struct{}
	goroutines map[*goroutine]struct{}
	observers  []func(Violation)
	seq        uint64 // orders Pending and Go reports
}

// Record appends v to the log and passes it to every observer. It fills
// v.Stack with the caller's stack if v.Stack is empty.
func (l *Log) Record(v Violation) {
	if v.Stack == "" {
		v.Stack = Stack(2)
	}
	if l == nil {
		panic("sever: contract violation: " + v.String() + "\n" + v.Stack)
	}
	if trace.IsEnabled() { // a log in the Go execution trace, next to the goroutine
		trace.Log(context.Background(), "sever violation", v.Class.String()+": "+v.Object+": "+v.Detail)
	}
	l.mu.Lock()
	l.violations = append(l.violations, v)
	obs := l.observers
	l.mu.Unlock()
	for _, f := range obs {
		f(v)
	}
}

// Observe calls f with every violation recorded from now on, on the
// recording goroutine. f must not block and must not call Record.
func (l *Log) Observe(f func(Violation)) {
	l.mu.Lock()
	l.observers = append(l.observers[:len(l.observers):len(l.observers)], f)
	l.mu.Unlock()
}

// Violations returns a copy of everything recorded so far, in order.
func (l *Log) Violations() []Violation {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Violation(nil), l.violations...)
}

// Count returns how many violations of class c were recorded.
func (l *Log) Count(c Class) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, v := range l.violations {
		if v.Class == c {
			n++
		}
	}
	return n
}

// Clean reports whether nothing has been recorded.
func (l *Log) Clean() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.violations) == 0
}

// Summary returns the count of each class recorded, for reports.
func (l *Log) Summary() map[Class]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[Class]int)
	for _, v := range l.violations {
		m[v.Class]++
	}
	return m
}

// Quiesce is the audit at the end of a run, when everything should have
// been closed, unplugged and unloaded. It waits until every goroutine started
// with Go has returned or ctx is done; it then records GoroutineLeft for each
// still running and ReleaseNeverRun for each Pending not yet done, and
// returns every violation recorded in the log's lifetime.
func (l *Log) Quiesce(ctx context.Context) []Violation {
	for {
		l.mu.Lock()
		var wait chan struct{}
		for g := range l.goroutines {
			wait = g.done
			break
		}
		l.mu.Unlock()
		if wait == nil {
			break
		}
		select {
		case <-wait:
			continue
		case <-ctx.Done():
		}
		break
	}
	l.mu.Lock()
	gs := make([]*goroutine, 0, len(l.goroutines))
	for g := range l.goroutines {
		gs = append(gs, g)
	}
	ps := make([]*Pending, 0, len(l.pending))
	for p := range l.pending {
		ps = append(ps, p)
	}
	l.mu.Unlock()
	sort.Slice(gs, func(i, j int) bool { return gs[i].seq < gs[j].seq })
	sort.Slice(ps, func(i, j int) bool { return ps[i].seq < ps[j].seq })
	for _, g := range gs {
		l.Record(Violation{Class: GoroutineLeft, Object: g.name, Detail: "still running at quiesce", Stack: "-", Cause: FormatStack(g.started)})
	}
	for _, p := range ps {
		l.Record(Violation{Class: ReleaseNeverRun, Object: p.object, Detail: p.what + " never ran", Stack: "-", Cause: FormatStack(p.created)})
	}
	return l.Violations()
}

// Stack returns the calling goroutine's stack, skipping skip frames above
// Stack's caller (skip 0 names Stack's caller).
func Stack(skip int) string {
	var pcs [32]uintptr
	n := runtime.Callers(skip+2, pcs[:])
	return FormatStack(pcs[:n])
}

// FormatStack formats program counters from runtime.Callers as one
// "function file:line" per line.
func FormatStack(pcs []uintptr) string {
	if len(pcs) == 0 {
		return ""
	}
	var b strings.Builder
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
		if !more {
			break
		}
	}
	return b.String()
}
