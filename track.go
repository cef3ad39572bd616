package sever

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/sever-dev/sever/check"
)

// Holder is one live reference or access recorded in tracking mode.
type Holder struct {
	Tag   any    // the tag given when it was taken; nil for accesses
	Stack string // where it was taken
}

func (h Holder) String() string {
	if h.Tag == nil {
		return "access taken at\n" + h.Stack
	}
	return fmt.Sprintf("%v taken at\n%s", h.Tag, h.Stack)
}

// HoldersError reports that an object was still held when it should not
// have been: a Sever that missed its deadline, a leak found by an audit. It
// unwraps to the underlying cause (the context's error, ErrBusy).
type HoldersError struct {
	Object  string
	Err     error
	Held    int      // how many references or accesses were outstanding
	Holders []Holder // who holds them; empty unless tracking was on
}

func (e *HoldersError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v: %d still held", e.Object, e.Err, e.Held)
	if len(e.Holders) == 0 && e.Held > 0 {
		b.WriteString(" (enable tracking to see by whom)")
	}
	for _, h := range e.Holders {
		b.WriteString("\n\t" + strings.ReplaceAll(h.String(), "\n", "\n\t"))
	}
	return b.String()
}

func (e *HoldersError) Unwrap() error { return e.Err }

// strings returns the holders formatted for a check.Violation.
func holderStrings(hs []Holder) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

const trackDepth = 16

type holding struct {
	tag any
	id  uint64
	pcs [trackDepth]uintptr
	n   int
}

// tracker records live holders in tracking mode. Holders are keyed by tag so
// that a Put(tag) releases a matching Get(tag); accesses use their token id
// as the key.
type tracker struct {
	mu   sync.Mutex
	next uint64
	live map[any][]*holding
}

func newTracker(on bool) *tracker {
	if !on {
		return nil
	}
	return &tracker{live: make(map[any][]*holding)}
}

// add records a holder under key, with the stack skip frames above add's
// caller, and returns its id.
func (t *tracker) add(key, tag any, skip int) uint64 {
	h := &holding{tag: tag}
	h.n = runtime.Callers(skip+2, h.pcs[:])
	t.mu.Lock()
	t.next++
	h.id = t.next
	t.live[key] = append(t.live[key], h)
	t.mu.Unlock()
	return h.id
}

// enter records an access under key (which names it alone) with the stack
// skip frames above enter's caller.
func (t *tracker) enter(key any, skip int) {
	h := &holding{}
	h.n = runtime.Callers(skip+2, h.pcs[:])
	t.mu.Lock()
	t.next++
	h.id = t.next
	t.live[key] = append(t.live[key], h)
	t.mu.Unlock()
}

// remove forgets the newest holder under key and reports whether there was
// one.
func (t *tracker) remove(key any) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	hs := t.live[key]
	if len(hs) == 0 {
		return false
	}
	if len(hs) == 1 {
		delete(t.live, key)
	} else {
		t.live[key] = hs[:len(hs)-1]
	}
	return true
}

// holders lists live holders, oldest first.
func (t *tracker) holders() []Holder {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	var hs []*holding
	for _, l := range t.live {
		hs = append(hs, l...)
	}
	t.mu.Unlock()
	sort.Slice(hs, func(i, j int) bool { return hs[i].id < hs[j].id })
	out := make([]Holder, len(hs))
	for i, h := range hs {
		out[i] = Holder{Tag: h.tag, Stack: check.FormatStack(h.pcs[:h.n])}
	}
	return out
}
