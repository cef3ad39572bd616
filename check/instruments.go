package check

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// callers records the stack skip frames above its caller as
// program counters; FormatStack turns them into text only when a violation
// is reported, so the bookkeeping of every open stays cheap.
func callers(skip int) []uintptr {
	var pcs [16]uintptr
	n := runtime.Callers(skip+2, pcs[:])
	return append([]uintptr(nil), pcs[:n]...)
}

// Pending is a release that must run exactly once before the log quiesces:
// the per-open Release of a file, the Free of a mapped region.
type Pending struct {
	log     *Log
	object  string
	what    string
	created []uintptr // where Expect was called
	seq     uint64
	done    atomic.Bool
}

// Expect registers a release of object, described by what (for example
// "Release of open 3"), that must run exactly once. A nil Log returns a
// Pending that checks nothing.
func (l *Log) Expect(object, what string) *Pending {
	p := &Pending{log: l, object: object, what: what}
	if l == nil {
		return p
	}
	p.created = callers(1)
	l.mu.Lock()
	l.seq++
	p.seq = l.seq
	if l.pending == nil {
		l.pending = make(map[*Pending]struct{})
	}
	l.pending[p] = struct{}{}
	l.mu.Unlock()
	return p
}

// Done marks the release as run. A second Done records ReleaseTwice. Done on
// a nil *Pending does nothing.
func (p *Pending) Done() {
	if p == nil || p.log == nil {
		return
	}
	if p.done.Swap(true) {
		p.log.Record(Violation{Class: ReleaseTwice, Object: p.object, Detail: p.what + " ran twice", Stack: Stack(1)})
		return
	}
	p.log.mu.Lock()
	delete(p.log.pending, p)
	p.log.mu.Unlock()
}

// Ran reports whether Done has been called.
func (p *Pending) Ran() bool { return p != nil && p.done.Load() }

type goroutine struct {
	name    string
	started []uintptr // where Go was called
	seq     uint64
	done    chan struct{}
}

// Go runs fn on a new goroutine that Quiesce accounts for: if fn has not
// returned by the end of Quiesce, the log records GoroutineLeft with the
// stack that called Go. A nil Log just runs fn on a new goroutine.
func (l *Log) Go(name string, fn func()) {
	if l == nil {
		go fn()
		return
	}
	g := &goroutine{name: name, started: callers(1), done: make(chan struct{})}
	l.mu.Lock()
	l.seq++
	g.seq = l.seq
	if l.goroutines == nil {
		l.goroutines = make(map[*goroutine]struct{})
	}
	l.goroutines[g] = struct{}{}
	l.mu.Unlock()
	go func() {
		defer func() {
			l.mu.Lock()
			delete(l.goroutines, g)
			l.mu.Unlock()
			close(g.done)
		}()
		fn()
	}()
}

// State is provider state that can be freed: the poisoned memory of a
// checked run. Use returns the value while it is live; after Free, Use
// records UseAfterFree (naming the stack that freed it) and returns the
// zero value. Go's collector keeps the memory itself valid; State makes the
// C lifetime the seeds argue about visible.
type State[T any] struct {
	log   *Log
	name  string
	mu    sync.Mutex
	v     T
	freed string // stack of Free; "" while live
}

// NewState returns live state named name holding v, reporting into l.
func NewState[T any](l *Log, name string, v T) *State[T] {
	return &State[T]{log: l, name: name, v: v}
}

// Use returns the value and true while the state is live. After Free it
// records UseAfterFree at site and returns the zero value and false.
func (s *State[T]) Use(site string) (T, bool) {
	s.mu.Lock()
	v, freed := s.v, s.freed
	s.mu.Unlock()
	if freed != "" {
		s.log.Record(Violation{Class: UseAfterFree, Object: s.name, Detail: "used by " + site + " after free", Stack: Stack(1), Cause: freed})
		var zero T
		return zero, false
	}
	return v, true
}

// Free frees the state: the value is dropped and every later Use is a
// violation. A second Free records ReleaseTwice.
func (s *State[T]) Free() {
	st := Stack(1)
	s.mu.Lock()
	already := s.freed != ""
	if !already {
		var zero T
		s.v, s.freed = zero, st
	}
	s.mu.Unlock()
	if already {
		s.log.Record(Violation{Class: ReleaseTwice, Object: s.name, Detail: "freed twice", Stack: st})
	}
}

// Freed reports whether Free has been called.
func (s *State[T]) Freed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freed != ""
}
