package device

import (
	"context"
	"errors"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/internal/ilist"
)

// Stage orders the things a device's removal path undoes: within a scope,
// every entry of an earlier stage is undone before any of a later one, and
// within a stage the newest first.
type Stage int

const (
	// stageChildren: child devices registered under the device (Register
	// with Config.Parent), each undone by its own Unregister. First, so the
	// subtree goes bottom-up before anything of the device is severed.
	stageChildren Stage = iota
	// StageFiles: attribute nodes and char devices — what userspace reaches
	// the driver through. Severed first of what the device itself holds,
	// right after its children.
	StageFiles
	// StageProviders: provider handles — what in-process consumers reach
	// the driver through. Severed after the files.
	StageProviders
	// stageResources: managed resources (AddResource), released after the
	// driver's Remove.
	stageResources

	nStages = int(stageResources) + 1
)

// SeverFunc severs one thing consumers reach a device's driver through: an
// attribute directory, a char device, a provider. It must refuse new
// entries, wait for the calls in flight (never for handles to close), run
// per-open releases of what is still open, and wake pollers with an error
// — a sever.Scope's Sever does all of that.
//
// It is framework code (kernfs, chardev, Provider), not driver code. When:
// at most once — when the scope it was added in ends (the binding's end, or
// Unregister), unless its remove function was called first. On which
// goroutine: the one running the removal path, with the device lock
// possibly held. What is gone: the device's children; nothing of the
// driver yet, Remove has not run. May it block: only until the calls in
// flight drain, honoring ctx; on ctx's end it returns the drain's error and
// the path continues.
type SeverFunc func(ctx context.Context) error

// The undo list.
//
// Everything a scope acquires — a child device, a severable, a managed
// resource — is one undoEntry on its device's undo list: one
// ilist.List per stage (d.undo[stage]), oldest first, each entry
// tagged with its scope (the binding it was added in, or nil: the
// device's own). An entry is in one of three places:
//
//	pending ──taken by a removal (unwind, or a child's own Unregister)──▶ undoing ──undone──▶ off
//	   │  ▲                                                                  │
//	   │  └──────────── put back: its undo refused with ErrDeadlock ─────────┘
//	   └──dropped (a severable's remove func, Resource.Release/Forget)──▶ off
//
// pending is d.undo[stage], undoing is d.undoing; each move is O(1)
// whatever the lists' lengths, so a removal of n entries costs O(n).
//
// Invariant (what makes every unwind pop O(1)): within a stage, the
// pending entries are in push order (seq) and those of the current binding
// are the newest — the list's tail end. In push order, because a push
// appends the largest seq yet and a put-back goes in right after the
// newest entry older than it. The binding's at the tail end, because its
// entries are one run of seqs newer than every other scope's: a push goes
// to d.bind whenever one is set (StateProbing, StateBound), to the device
// otherwise, and d.bind changes only under the device lock — from nil to a
// new binding at probe, back to nil at the end of that binding's removal,
// inside which every unwind of the binding runs. So the binding has a
// pending entry in a stage exactly when that stage's tail is its own, and
// nextLocked looks at the tail only: no count of the binding's entries and
// no walk. And since no push is taken once a binding's end has begun
// (refusingLocked: StateUnbinding, StateRemoving, also for a failed
// Probe's undoing), the end, having popped its entries off the tails,
// leaves none of them when it sets d.bind to nil (a binding's end stopped
// by ErrDeadlock keeps d.bind and the refusal until a removal finishes
// it). TestUndoListKeepsItsInvariant and TestUndoPutBackKeepsPushOrder
// check both halves after every step.

// undoEntry is one entry of a device's undo list: a child device (child
// set), a severable (sever set) or a managed resource (res set), in the
// scope it was added in.
type undoEntry struct {
	name  string
	stage Stage
	scope *binding // nil: the device's own
	child *Device
	sever SeverFunc
	res   *Resource
	seq   uint64 // order of the push: where a put-back entry goes

	links ilist.Links[undoEntry] // place on a stage's pending list or d.undoing; on neither: off
	done  chan struct{}          // while undoing: closed when undone; made by the first waiter (most entries have none)
}

// anyScope selects every scope in unwind.
var anyScope = &binding{}

// refusingLocked reports whether the device takes no new entries: a
// binding is ending or the device is being removed. d.mu is held.
func (d *Device) refusingLocked() bool { return d.state >= StateUnbinding }

// pushLocked adds e to the undo list in the current scope: the binding, if
// a driver is probing or bound, else the device's own. d.mu is held and
// d is not refusing.
func (d *Device) pushLocked(e *undoEntry) {
	e.scope = d.bind
	d.undoSeq++
	e.seq = d.undoSeq
	d.undo[e.stage].PushBack(e, &e.links)
}

// pendingLocked reports whether e is on its stage's pending list. d.mu is
// held.
func (d *Device) pendingLocked(e *undoEntry) bool { return d.undo[e.stage].Contains(&e.links) }

// takeLocked moves e, pending, to undoing: a removal undoes it now. d.mu
// is held.
func (d *Device) takeLocked(e *undoEntry) {
	d.unpendLocked(e)
	d.undoing.PushBack(e, &e.links)
}

// unpendLocked takes e, pending, off its stage's list. d.mu is held.
func (d *Device) unpendLocked(e *undoEntry) {
	d.undo[e.stage].Remove(&e.links)
}

// putBack returns e, taken, to its place among the pending entries — after
// the newest older one — because its undo refused (ErrDeadlock): a
// removal from outside undoes it later. Its taker is done with it.
func (d *Device) putBack(e *undoEntry) {
	d.mu.Lock()
	d.undoing.Remove(&e.links)
	l := &d.undo[e.stage]
	var at *ilist.Links[undoEntry] // nil: first
	for x := range l.Backward() {  // past the entries pushed since it was taken: few, if any
		if x.seq < e.seq {
			at = &x.links
			break
		}
	}
	l.InsertAfter(e, &e.links, at)
	d.wakeLocked(e)
	d.mu.Unlock()
}

// finish ends e's undoing: whoever waits for it goes on.
func (d *Device) finish(e *undoEntry) {
	d.mu.Lock()
	d.undoing.Remove(&e.links)
	d.wakeLocked(e)
	d.mu.Unlock()
}

// waitChanLocked returns a channel closed when e, undoing, leaves undoing.
// d.mu is held.
func (d *Device) waitChanLocked(e *undoEntry) <-chan struct{} {
	if e.done == nil {
		e.done = make(chan struct{})
	}
	return e.done
}

// wakeLocked wakes whoever waits for e, which has just left undoing. d.mu
// is held.
func (d *Device) wakeLocked(e *undoEntry) {
	if e.done != nil {
		close(e.done)
		e.done = nil
	}
}

// AddSeverable registers fn to be called by the removal path at stage. If
// a driver is binding or bound it belongs to that binding (severed when it
// ends); otherwise to the device (severed at Unregister). Within a stage,
// the newest is severed first. remove takes fn out of the list without
// calling it, for a thing its creator removes early; calling remove again
// does nothing. On a device that is being removed, or whose binding is
// ending, AddSeverable returns an error wrapping sever.ErrNoDevice.
//
// This is the hook through which kernfs nodes and char devices (package
// chardev) join the removal path.
func (d *Device) AddSeverable(name string, stage Stage, fn SeverFunc) (remove func(), err error) {
	if stage != StageFiles && stage != StageProviders {
		return func() {}, &sever.ObjectError{Object: d.path + ": " + name, Err: sever.ErrInvalid}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refusingLocked() {
		return func() {}, d.errNoDevice("adding " + name)
	}
	e := &undoEntry{name: name, stage: stage, sever: fn}
	d.pushLocked(e)
	return func() { d.dropEntry(e) }, nil
}

// dropEntry takes e off the undo list without undoing it, and reports
// whether it was pending there (not undone, nor being undone). O(1).
func (d *Device) dropEntry(e *undoEntry) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.pendingLocked(e) {
		return false
	}
	d.unpendLocked(e)
	return true
}

// nextLocked returns the newest pending entry of stage in scope (the
// current binding, or anyScope: all), or nil: by the invariant (see "The
// undo list") the stage's tail if that is in scope, else none. O(1). d.mu
// is held.
func (d *Device) nextLocked(scope *binding, stage Stage) *undoEntry {
	e := d.undo[stage].Back()
	if e == nil || (scope != anyScope && e.scope != scope) {
		return nil
	}
	return e
}

// unwind undoes, newest first, the entries of stage in scope (the current
// binding, d.bind, which the caller's device lock keeps current; or
// anyScope: all), each exactly once — the one LIFO loop of
// the removal path — and returns when every one of them is undone, also
// those another removal took first and is still undoing: an Unregister
// and a driver's unbind run concurrently on one device, and the unbind
// must not go on to Remove while a char device of its binding is still
// being severed by the Unregister (found by sever stress: a Release ran
// after Remove); and a parent's removal must not go on to its files while
// a child that another goroutine is unregistering is still there.
//
// An undo that refuses with sever.ErrDeadlock (called from inside one of
// the thing's own callbacks) puts its entry back and stops the unwind:
// nothing after it is undone, and the error is returned.
func (d *Device) unwind(ctx context.Context, scope *binding, stage Stage) error {
	var errs []error
	for {
		d.mu.Lock()
		e := d.nextLocked(scope, stage)
		type other struct {
			name string
			done <-chan struct{}
		}
		var others []other
		if e != nil {
			d.takeLocked(e)
		} else {
			for x := range d.undoing.All() {
				if x.stage == stage && (scope == anyScope || x.scope == scope) {
					others = append(others, other{x.name, d.waitChanLocked(x)})
				}
			}
		}
		d.mu.Unlock()
		if e == nil {
			cut := false
			for _, x := range others {
				select {
				case <-x.done:
				case <-ctx.Done():
					cut = true
					errs = append(errs, &sever.ObjectError{Object: d.path + ": " + x.name, Err: ctx.Err()})
				}
			}
			if len(others) == 0 || cut {
				return errors.Join(errs...)
			}
			// Look again: an entry whose undo refused (ErrDeadlock) was put
			// back, pending, and is this removal's to finish.
			continue
		}
		err := e.undo(ctx, d)
		if errors.Is(err, sever.ErrDeadlock) {
			// Called from inside one of the thing's own callbacks: its
			// sever refused to wait for its caller. Put the entry back
			// where it was, so that a removal from outside finishes it,
			// and stop: nothing after it is undone.
			d.putBack(e)
			return errors.Join(append(errs, err)...)
		}
		if err != nil {
			errs = append(errs, err)
		}
		d.finish(e)
	}
}

// undo undoes the entry of d: unregisters the child, severs the severable
// or releases the resource. An ErrDeadlock comes back as it is.
func (e *undoEntry) undo(ctx context.Context, d *Device) error {
	switch {
	case e.child != nil:
		return e.child.Unregister(ctx) // its errors name the child
	case e.sever != nil:
		err := e.sever(ctx)
		if err != nil && !errors.Is(err, sever.ErrDeadlock) {
			err = &sever.ObjectError{Object: d.path + ": " + e.name, Err: err}
		}
		return err
	}
	e.res.run()
	return nil
}
