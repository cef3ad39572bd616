package device

import (
	"context"
	"errors"
	"slices"

	"github.com/sever-dev/sever"
)

// Stage orders the things a device's removal path undoes: within a scope,
// every entry of an earlier stage is undone before any of a later one, and
// within a stage the newest first.
type Stage int

const (
	// StageFiles: attribute nodes and char devices — what userspace reaches
	// the driver through. Severed first.
	StageFiles Stage = iota
	// StageProviders: provider handles — what in-process consumers reach
	// the driver through. Severed after the files.
	StageProviders
	// stageResources: managed resources (AddResource), released after the
	// driver's Remove.
	stageResources
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
// possibly held. What is gone: nothing of the driver yet; Remove has not
// run. May it block: only until the calls in flight drain, honoring ctx; on
// ctx's end it returns the drain's error and the path continues.
type SeverFunc func(ctx context.Context) error

// undoEntry is one entry of a device's undo list: a severable (sever set)
// or a managed resource (res set), in the scope it was added in.
type undoEntry struct {
	name  string
	stage Stage
	scope *binding // nil: the device's own
	sever SeverFunc
	res   *Resource
	done  chan struct{} // closed when undone; made when a removal takes it
}

// anyScope selects every scope in unwind.
var anyScope = &binding{}

// refusingLocked reports whether the device takes no new entries: a
// binding is ending or the device is being removed. d.mu is held.
func (d *Device) refusingLocked() bool { return d.state >= StateUnbinding }

// push adds e to the undo list. d.mu is held.
func (d *Device) pushLocked(e *undoEntry) {
	e.scope = d.bind
	d.undo = append(d.undo, e)
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
	return func() { d.dropEntry(func(x *undoEntry) bool { return x == e }) }, nil
}

// dropEntry takes the entry match selects off the undo list without
// undoing it, and reports whether it was there.
func (d *Device) dropEntry(match func(*undoEntry) bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.undo)
	d.undo = slices.DeleteFunc(d.undo, match)
	return len(d.undo) != n
}

// unwind undoes, newest first, the entries of stage in scope (nil: the
// device's own; anyScope: all), each exactly once — the one LIFO loop of
// the removal path — and returns when every one of them is undone, also
// those another removal took first and is still undoing: an Unregister
// and a driver's unbind run concurrently on one device, and the unbind
// must not go on to Remove while a char device of its binding is still
// being severed by the Unregister (found by sever stress: a Release ran
// after Remove).
func (d *Device) unwind(ctx context.Context, scope *binding, stage Stage) error {
	var errs []error
	in := func(x *undoEntry) bool { return x.stage == stage && (scope == anyScope || x.scope == scope) }
	for {
		d.mu.Lock()
		var e *undoEntry
		at := 0
		for i := len(d.undo) - 1; i >= 0; i-- {
			if x := d.undo[i]; in(x) {
				e, at = x, i
				d.undo = slices.Delete(d.undo, i, i+1)
				e.done = make(chan struct{})
				d.undoing = append(d.undoing, e)
				break
			}
		}
		var others []*undoEntry
		if e == nil {
			for _, x := range d.undoing {
				if in(x) {
					others = append(others, x)
				}
			}
		}
		d.mu.Unlock()
		if e == nil {
			for _, x := range others {
				select {
				case <-x.done:
				case <-ctx.Done():
					errs = append(errs, &sever.ObjectError{Object: d.path + ": " + x.name, Err: ctx.Err()})
				}
			}
			return errors.Join(errs...)
		}
		if e.sever != nil {
			if err := e.sever(ctx); errors.Is(err, sever.ErrDeadlock) {
				// Called from inside one of the thing's own callbacks: the
				// sever refused to wait for its caller. Put the entry back
				// where it was, so that a removal from outside finishes it,
				// and stop: nothing after it is undone.
				d.mu.Lock()
				d.undoing = slices.DeleteFunc(d.undoing, func(x *undoEntry) bool { return x == e })
				d.undo = slices.Insert(d.undo, min(at, len(d.undo)), e)
				d.mu.Unlock()
				close(e.done)
				return errors.Join(append(errs, err)...)
			} else if err != nil {
				errs = append(errs, &sever.ObjectError{Object: d.path + ": " + e.name, Err: err})
			}
		} else {
			e.res.run()
		}
		d.mu.Lock()
		d.undoing = slices.DeleteFunc(d.undoing, func(x *undoEntry) bool { return x == e })
		d.mu.Unlock()
		close(e.done)
	}
}
