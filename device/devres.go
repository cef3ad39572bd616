package device

import (
	"slices"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// ReleaseFunc releases one managed resource (devres).
//
// When: exactly once — after the driver's Remove when the binding it was
// added in ends (or right after a failed Probe, without Remove), at
// Unregister for a resource added to an unbound device, or at an explicit
// Release; never if the resource was Forgotten. Resources go in reverse
// order of addition. On which goroutine: the one running the removal path,
// with the device lock held. What is gone: the device's children, attribute
// nodes, char devices and provider handles; the driver's Remove has run.
// What it may touch: the resource and the driver state it belongs to. May
// it block: briefly; it must not wait for hardware (it may be unplugged) or
// for consumers. A panic is recovered and recorded as check.DriverFault.
type ReleaseFunc func()

// Resource is one managed resource of a device.
type Resource struct {
	d       *Device
	name    string
	release ReleaseFunc
	scope   *binding
	group   *Group     // nil: in the device's list
	entry   *undoEntry // its entry on the device's undo list; nil in a group
	pending *check.Pending

	mu   sync.Mutex
	done bool
}

// AddResource registers release to run when the current binding ends (or,
// on an unbound device, at Unregister), after Remove and before the
// resources added earlier. On a device being removed or unbound it does not
// register and returns an error wrapping sever.ErrNoDevice; the caller
// still owns the resource.
func (d *Device) AddResource(name string, release ReleaseFunc) (*Resource, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refusingLocked() {
		return nil, d.errNoDevice("adding resource " + name)
	}
	return d.addResourceLocked(name, release), nil
}

// addResourceLocked adds a resource to the undo list in the current scope.
// d.mu is held and d is not refusing.
func (d *Device) addResourceLocked(name string, release ReleaseFunc) *Resource {
	r := d.newResource(name, release, nil)
	r.entry = &undoEntry{name: "devres " + name, stage: stageResources, res: r}
	d.pushLocked(r.entry)
	return r
}

// newResource builds a resource in the current scope. d.mu is held.
func (d *Device) newResource(name string, release ReleaseFunc, g *Group) *Resource {
	return &Resource{
		d:       d,
		name:    name,
		release: release,
		scope:   d.bind,
		group:   g,
		pending: d.core.log.Expect(d.path+": devres "+name, "release"),
	}
}

// Name returns the name given when the resource was added.
func (r *Resource) Name() string { return r.name }

// Release runs the resource's release now and forgets it (devres_release).
// Release after the resource was released or forgotten does nothing.
func (r *Resource) Release() {
	if r.unlink() {
		r.run()
	}
}

// Forget drops the resource from management without running its release
// (devres_remove): the caller owns it again. Forget after Release does
// nothing.
func (r *Resource) Forget() {
	if r.unlink() {
		r.mu.Lock()
		r.done = true
		r.mu.Unlock()
		r.pending.Done()
	}
}

// unlink takes r out of its list — its group's, or the device's undo list
// — and reports whether it was still there.
func (r *Resource) unlink() bool {
	d := r.d
	if g := r.group; g != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		i := slices.Index(g.items, r)
		if i < 0 {
			return false
		}
		g.items = slices.Delete(g.items, i, i+1)
		return true
	}
	return d.dropEntry(r.entry)
}

// run calls the release function once.
func (r *Resource) run() {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return
	}
	r.done = true
	r.mu.Unlock()
	var o *sever.Owner
	if r.scope != nil {
		o = r.scope.drv.Owner
	}
	if r.release != nil {
		_ = r.d.core.call(o, r.d.path, "devres "+r.name, func() error { r.release(); return nil })
	}
	r.pending.Done()
}

// Group is a set of managed resources released together, newest first
// (devres_open_group): a driver's optional feature whose setup can fail
// half-way, or a sub-function with its own lifetime.
type Group struct {
	r     *Resource // the group's own entry in the device's list
	items []*Resource
}

// OpenGroup adds an empty group in the current scope. Resources added to
// it with Add are released when the group is released — explicitly, or
// with the scope, at the group's place in the order.
func (d *Device) OpenGroup(name string) (*Group, error) {
	g := &Group{}
	r, err := d.AddResource("group "+name, func() { g.releaseItems() })
	if err != nil {
		return nil, err
	}
	g.r = r
	return g, nil
}

// Add registers release in the group; see AddResource.
func (g *Group) Add(name string, release ReleaseFunc) (*Resource, error) {
	d := g.r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refusingLocked() || !d.pendingLocked(g.r.entry) {
		return nil, d.errNoDevice("adding resource " + name)
	}
	r := d.newResource(name, release, g)
	g.items = append(g.items, r)
	return r, nil
}

// Release releases the group's resources, newest first, and the group
// (devres_release_group). A second Release does nothing.
func (g *Group) Release() { g.r.Release() }

func (g *Group) releaseItems() {
	for {
		d := g.r.d
		d.mu.Lock()
		n := len(g.items)
		if n == 0 {
			d.mu.Unlock()
			return
		}
		r := g.items[n-1]
		g.items = g.items[:n-1]
		d.mu.Unlock()
		r.run()
	}
}
