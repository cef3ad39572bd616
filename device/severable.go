package device

import (
	"context"
	"errors"
	"slices"

	"github.com/sever-dev/sever"
)

// Stage orders the severables of a device within the removal path.
type Stage int

const (
	// StageFiles: attribute nodes and char devices — what userspace reaches
	// the driver through. Severed first.
	StageFiles Stage = iota
	// StageProviders: provider handles — what in-process consumers reach
	// the driver through. Severed after the files.
	StageProviders
)

// SeverFunc severs one thing consumers reach a device's driver through: an
// attribute directory, a char device, a provider. It must refuse new
// entries, wait for the calls in flight (never for handles to close), run
// per-open releases of what is still open, and wake pollers with an error.
//
// It is framework code (kernfs, chardev, Provider), not driver code. When:
// at most once — when the scope it was added in ends (the binding's end, or
// Unregister), unless its remove function was called first. On which
// goroutine: the one running the removal path, with the device lock
// possibly held. What is gone: nothing of the driver yet; Remove has not
// run. May it block: only until the calls in flight drain, honoring ctx; on
// ctx's end it returns the drain's error and the path continues.
type SeverFunc func(ctx context.Context) error

type severable struct {
	name  string
	stage Stage
	fn    SeverFunc
	scope *binding
	done  chan struct{} // closed when fn has returned; made when it is taken
}

// anyScope selects every scope in severScope.
var anyScope = &binding{}

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
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removing || d.state == StateUnbinding {
		return func() {}, d.errNoDevice("adding " + name)
	}
	s := &severable{name: name, stage: stage, fn: fn, scope: d.bind}
	d.sev = append(d.sev, s)
	return func() {
		d.mu.Lock()
		d.sev = slices.DeleteFunc(d.sev, func(x *severable) bool { return x == s })
		d.mu.Unlock()
	}, nil
}

// severScope severs, newest first, the severables of stage in scope (nil:
// the device's own; anyScope: all), each exactly once, and returns when
// every one of them is severed — also those another removal path took
// first and is still severing: an Unregister and a driver's unbind run
// concurrently on one device, and the unbind must not go on to Remove
// while a char device of its binding is still being severed by the
// Unregister (found by sever stress: a Release ran after Remove).
func (d *Device) severScope(ctx context.Context, scope *binding, stage Stage) error {
	var errs []error
	in := func(x *severable) bool { return x.stage == stage && (scope == anyScope || x.scope == scope) }
	for {
		d.mu.Lock()
		var s *severable
		for i := len(d.sev) - 1; i >= 0; i-- {
			if x := d.sev[i]; in(x) {
				s = x
				d.sev = slices.Delete(d.sev, i, i+1)
				s.done = make(chan struct{})
				d.severing = append(d.severing, s)
				break
			}
		}
		var others []*severable
		if s == nil {
			for _, x := range d.severing {
				if in(x) {
					others = append(others, x)
				}
			}
		}
		d.mu.Unlock()
		if s == nil {
			for _, x := range others {
				select {
				case <-x.done:
				case <-ctx.Done():
					errs = append(errs, &sever.ObjectError{Object: d.path + ": " + x.name, Err: ctx.Err()})
				}
			}
			return errors.Join(errs...)
		}
		if err := s.fn(ctx); err != nil {
			errs = append(errs, &sever.ObjectError{Object: d.path + ": " + s.name, Err: err})
		}
		d.mu.Lock()
		d.severing = slices.DeleteFunc(d.severing, func(x *severable) bool { return x == s })
		d.mu.Unlock()
		close(s.done)
	}
}
