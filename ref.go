package sever

import (
	"fmt"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
)

// Ref is a reference count whose release is deterministic: the release
// function runs exactly once, synchronously, on the goroutine that puts the
// last reference. It is the kref of sever, for framework-owned objects such
// as file shells, whose memory must outlive every holder but no longer.
//
// A Ref is created holding one reference, owned by its creator under the nil
// tag. Get and TryGet take more; Put drops one.
//
//	live (count ≥ 1) ──last Put──▶ released (count 0, release has run)
//
// Once released a Ref stays released: TryGet fails, and Get or Put panic
// with a message naming the Ref.
//
// Tags name holders. Without tracking they are ignored; with WithTracking
// every Get records its tag and stack, Put(tag) drops the newest holder with
// an equal tag (and panics if there is none), and Holders lists who holds the
// Ref now — the shape of a ref_tracker. Tags must be comparable: a string, a
// pointer to the holder.
type Ref struct {
	n       atomic.Int64
	name    string
	release func()
	tr      *tracker
	life    *Lifeline // nil unless observed (WithObserver) or traced
}

// NewRef returns a Ref named name holding one reference (tag nil). release,
// which may be nil, runs once when the count reaches zero; it must not take
// the Ref again.
func NewRef(name string, release func(), opts ...Option) *Ref {
	o := buildOptions(opts)
	r := &Ref{name: name, release: release, tr: newTracker(o.tracking), life: o.lifeline("ref", name, "live")}
	r.n.Store(1)
	if r.tr != nil {
		r.tr.add(nil, nil, 1)
	}
	return r
}

// Name returns the name given to NewRef.
func (r *Ref) Name() string { return r.name }

// Get takes a reference under tag. The caller must already hold one (or
// otherwise know the Ref is live); Get on a released Ref panics.
func (r *Ref) Get(tag any) {
	if r.tr != nil {
		r.tr.add(tag, tag, 1)
	}
	if r.n.Add(1) <= 1 {
		panic(fmt.Sprintf("sever: Ref %q: Get after release", r.name))
	}
}

// TryGet takes a reference under tag unless the Ref has been released, and
// reports whether it did. It is the way to take a reference from a lookup
// structure that does not itself hold one.
func (r *Ref) TryGet(tag any) bool {
	for {
		n := r.n.Load()
		if n <= 0 {
			return false
		}
		if r.n.CompareAndSwap(n, n+1) {
			if r.tr != nil {
				r.tr.add(tag, tag, 1)
			}
			return true
		}
	}
}

// Put drops a reference taken under tag. The Put that drops the last
// reference runs the release function before returning. A Put with no
// reference left panics; with tracking, so does a Put whose tag holds none.
func (r *Ref) Put(tag any) {
	if r.tr != nil && !r.tr.remove(tag) {
		panic(fmt.Sprintf("sever: Ref %q: Put(%v) without a matching Get; holders:\n%v", r.name, tag, r.tr.holders()))
	}
	switch n := r.n.Add(-1); {
	case n == 0:
		if r.release != nil {
			end := r.life.StartRegion("release")
			r.release()
			end()
		}
		r.life.Emit(Event{Kind: EventReleased, State: "released"})
	case n < 0:
		panic(fmt.Sprintf("sever: Ref %q: Put after release (count %d)", r.name, n))
	}
}

// Count returns the current count. It is for reports and tests: by the time
// it returns, the count may have changed.
func (r *Ref) Count() int64 { return r.n.Load() }

// Holders lists the live holders, oldest first. It is empty unless the Ref
// was made WithTracking.
func (r *Ref) Holders() []Holder { return r.tr.holders() }

// Audit checks that at most want references are held and, if more are,
// records check.ReferenceAfterUnregister in l naming the holders and returns
// a *HoldersError wrapping ErrBusy. It is the check the driver-model RFD
// proposes, a count still above zero after unregistration being a bug
// (DESIGN.md, "Seed 004", §3).
func (r *Ref) Audit(l *check.Log, want int64) error {
	n := r.n.Load()
	if n <= want {
		return nil
	}
	hs := r.Holders()
	err := &HoldersError{Object: r.name, Err: ErrBusy, Held: int(n), Holders: hs}
	if l != nil {
		l.Record(check.Violation{
			Class:   check.ReferenceAfterUnregister,
			Object:  r.name,
			Detail:  fmt.Sprintf("%d references held, want at most %d", n, want),
			Holders: holderStrings(hs),
		})
	}
	return err
}
