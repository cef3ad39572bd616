package device

import (
	"context"
	"errors"
	"fmt"

	"github.com/sever-dev/sever"
)

// ErrProbeDeferred is returned by a bind attempt that waits for a supplier
// (see LinkManaged): the device is probed again when a supplier binds. It
// wraps sever.ErrWouldBlock (EAGAIN), the role of EPROBE_DEFER.
var ErrProbeDeferred = fmt.Errorf("probe deferred until suppliers are bound: %w", sever.ErrWouldBlock)

// attach probes d against its bus's drivers, oldest first, until one binds.
func (d *Device) attach(ctx context.Context) {
	for _, drv := range d.bus.Drivers() {
		if !d.bus.match(d, drv) {
			continue
		}
		err := d.probe(ctx, drv)
		if err == nil || errors.Is(err, ErrProbeDeferred) {
			return
		}
	}
}

// Bind binds drv to d, as writing d's name to the driver's bind file does
// — except that the bind file refuses, with an error wrapping
// sever.ErrNoDevice, a driver that does not match d (bind_store's
// driver_match_device), while Bind lets its caller pair any driver of the
// bus with d. It returns Probe's error; sever.ErrBusy if d is already bound;
// sever.ErrNoDevice if d or drv is going away or drv's owner is unloading;
// ErrProbeDeferred if a managed supplier is not bound yet.
func (d *Device) Bind(ctx context.Context, drv *Driver) error {
	if d.bus == nil || drv.Bus() != d.bus {
		return &sever.ObjectError{Object: d.path, Err: fmt.Errorf("driver %s is not on the device's bus: %w", drv.Name, sever.ErrInvalid)}
	}
	return d.probe(ctx, drv)
}

// Unbind ends the current binding through the one removal path (see
// Device.remove), as writing "1" to the device's unbind file does. The
// device stays registered and may be bound again. Unbind of an unbound
// device does nothing. It must not be called from the device's own Probe
// or Remove.
//
// Called from inside one of the binding's attribute callbacks or char
// device operations, it would wait for that callback forever; instead, as
// Unregister does, it returns an error wrapping sever.ErrDeadlock that
// names the callback's file, recording check.Misuse. The unbind stops at
// that file: the device stays in StateUnbinding with its driver, refusing
// new children and entries, and what was undone before the file is gone.
// A later Unbind (or the driver's unregistration, or Unregister) from
// another goroutine, after the callback has returned, finishes it: Remove
// runs once, and the device is StateRegistered and may be bound again.
func (d *Device) Unbind(ctx context.Context) error {
	d.lock.Lock()
	defer d.lock.Unlock()
	return d.unbindLocked(ctx)
}

// unbindDriver unbinds d if drv is the driver bound to it.
func (d *Device) unbindDriver(ctx context.Context, drv *Driver) error {
	d.lock.Lock()
	defer d.lock.Unlock()
	if d.Driver() != drv {
		return nil
	}
	return d.unbindLocked(ctx)
}

func (d *Device) probe(ctx context.Context, drv *Driver) error {
	d.lock.Lock()
	err := d.probeLocked(ctx, drv)
	d.lock.Unlock()
	if err == nil {
		d.core.retryDeferred(ctx)
	}
	return err
}

// probeLocked runs one binding attempt. d.lock is held.
func (d *Device) probeLocked(ctx context.Context, drv *Driver) error {
	c := d.core
	d.mu.Lock()
	switch {
	case d.state >= StateRemoving:
		d.mu.Unlock()
		return d.errNoDevice("being removed")
	case d.state != StateRegistered:
		d.mu.Unlock()
		return &sever.ObjectError{Object: d.path, Err: fmt.Errorf("already bound: %w", sever.ErrBusy)}
	}
	d.mu.Unlock()
	if !c.links.suppliersReady(d) {
		c.deferProbe(d, drv)
		return &sever.ObjectError{Object: d.path, Err: ErrProbeDeferred}
	}
	c.undeferProbe(d)

	// The binding pins the driver's owner: it cannot unload (UnloadTry)
	// while the device is bound, and UnloadForce unbinds first.
	if drv.Owner != nil && !drv.Owner.TryGet(d) {
		return d.errNoDevice("owner " + drv.Owner.Name() + " is unloading")
	}
	// Join the driver's bound list before Probe, under its lock, so an
	// UnregisterDriver racing with us either refuses us here or finds us
	// (and waits on d.lock for Probe to finish).
	drv.mu.Lock()
	if drv.gone || drv.bus != d.bus {
		drv.mu.Unlock()
		if drv.Owner != nil {
			drv.Owner.Put(d)
		}
		return d.errNoDevice("driver " + drv.Name + " is unregistered")
	}
	drv.bound.PushBack(d, &d.onDrv)
	drv.mu.Unlock()

	b := &binding{drv: drv}
	d.mu.Lock()
	if d.state >= StateRemoving { // an Unregister began since the check above
		d.mu.Unlock()
		drv.dropBound(d)
		if drv.Owner != nil {
			drv.Owner.Put(d)
		}
		return d.errNoDevice("being removed")
	}
	d.state, d.driver, d.bind = StateProbing, drv, b
	d.mu.Unlock()

	// Attribute groups exist, invisible, before Probe (so Probe may use
	// them) and are shown only when it succeeds.
	err := c.sys.addDriverGroups(d, b)
	if err == nil && drv.Probe != nil {
		end := sever.TraceRegion(ctx, "sever probe")
		err = c.call(drv.Owner, d.path, drv.Name+".Probe", func() error { return drv.Probe(ctx, d) })
		end()
	}
	if err != nil {
		d.mu.Lock()
		if d.state == StateProbing { // the binding ends: no new entries in its scope
			d.state = StateUnbinding
		}
		d.mu.Unlock()
		_ = d.remove(ctx, b, false) // the error that matters is Probe's
		return err
	}
	d.mu.Lock()
	b.probed = true
	if d.state == StateProbing { // an Unregister that began meanwhile ends the binding
		d.state = StateBound
	}
	d.mu.Unlock()
	c.sys.activateDriver(d, b)
	c.uevent(d, ActionBind, nil)
	return nil
}

// unbindLocked ends the current binding, or finishes an end of it that
// stopped at ErrDeadlock. d.lock is held.
func (d *Device) unbindLocked(ctx context.Context) error {
	d.mu.Lock()
	b := d.bind
	switch {
	case b == nil:
		d.mu.Unlock()
		return nil
	case d.state == StateBound:
		d.state = StateUnbinding
	case d.state == StateUnbinding:
		// Every end of a binding holds d.lock, as we do: none is
		// running, so this one stopped at ErrDeadlock (an Unbind, or a
		// failed Probe's undoing, called from inside a callback of the
		// binding) and left the binding for a removal from outside to
		// finish. Its refused entry is pending again; go on from there.
	default: // StateRemoving: Unregister ends the binding
		d.mu.Unlock()
		return nil
	}
	probed := b.probed
	d.mu.Unlock()
	err := d.remove(ctx, b, probed)
	if errors.Is(err, sever.ErrDeadlock) {
		return d.selfUnbindError(err)
	}
	return err
}

// remove is the one removal path. Every removal takes it — Unregister
// (b is nil: the device goes), and the end of a binding b: an unbind
// request, a driver's unregistration, an owner's unload, a managed
// supplier's removal, and a failed Probe (probed false: no Remove). Its
// steps, in this order, are its code:
//
//	children   unregister the children of the scope (undo stage
//	           stageChildren), newest first; each removes its own first,
//	           so the subtree goes bottom-up
//	files      sever attribute nodes and char devices (StageFiles): no
//	           attribute or char device callback runs now or later; open
//	           files are shells
//	consumers  unbind the managed consumers of the ending binding
//	providers  revoke provider handles (StageProviders): consumers get
//	           ErrNoDevice
//	driver     call the driver's Remove (if its Probe succeeded): nothing
//	           can reach the driver's state any more
//	resources  release managed resources (stageResources), newest first
//	unbind     forget the driver, drop its owner's pin, uevent "unbind"
//	unlink     (Unregister only) purge device links, leave bus, class and
//	           tree, uevent "remove"
//
// children, files, providers and resources are the stages of the device's
// one undo list (undo.go), each undone by unwind: the binding's entries
// for the end of a binding, every entry for Unregister; within a stage the
// newest first; entries another removal is undoing are waited for. A step
// that refuses with sever.ErrDeadlock (a removal called from inside one
// of the device's, or a child's, own callbacks) stops the path there. For
// the end of a binding the caller holds the device lock throughout;
// Unregister takes it after files (a Store waiting for the lock must be
// able to drain).
func (d *Device) remove(ctx context.Context, b *binding, probed bool) error {
	var errs []error
	scope := b
	if b == nil {
		scope = anyScope
	}
	errs = append(errs, d.unwind(ctx, scope, stageChildren)) // children
	if err := errors.Join(errs...); errors.Is(err, sever.ErrDeadlock) {
		return err // called from inside a callback of a child: see Unregister
	}
	errs = append(errs, d.unwind(ctx, scope, StageFiles)) // files
	if err := errors.Join(errs...); errors.Is(err, sever.ErrDeadlock) {
		return err // called from inside a callback of the device: see Unregister
	}
	if b == nil {
		// Unregister: end the binding, if any, in the same steps.
		d.lock.Lock()
		defer d.lock.Unlock()
		d.mu.Lock()
		b = d.bind // Probe holds the lock: a binding here has probed, or its end stopped at ErrDeadlock
		probed = b != nil && b.probed
		d.mu.Unlock()
	}
	if b != nil {
		errs = append(errs, d.unbindManagedConsumers(ctx)) // consumers
	}
	errs = append(errs, d.unwind(ctx, scope, StageProviders)) // providers
	if err := errors.Join(errs...); errors.Is(err, sever.ErrDeadlock) {
		return err // called from inside a callback of the device: see Unregister
	}
	if probed && b.drv.Remove != nil { // driver
		drv := b.drv
		errs = append(errs, d.core.call(drv.Owner, d.path, drv.Name+".Remove", func() error {
			drv.Remove(ctx, d)
			return nil
		}))
	}
	errs = append(errs, d.unwind(ctx, scope, stageResources)) // resources
	if b != nil {                                             // unbind
		d.mu.Lock()
		if d.state != StateRemoving {
			d.state = StateRegistered
		}
		d.driver, d.bind, d.drvdata = nil, nil, nil
		d.mu.Unlock()
		b.drv.dropBound(d)
		if b.drv.Owner != nil {
			b.drv.Owner.Put(d)
		}
		if probed {
			d.core.uevent(d, ActionUnbind, map[string]string{"DRIVER": b.drv.Name})
		}
	}
	if scope == anyScope { // unlink
		d.core.links.purge(d)
		if bus := d.bus; bus != nil {
			bus.mu.Lock()
			bus.devices.Remove(&d.onBus)
			bus.mu.Unlock()
		}
		d.core.sys.removeDevice(d)
		d.core.uevent(d, ActionRemove, nil)
	}
	return errors.Join(errs...)
}

// Unregister removes the device through the one removal path,
// Device.remove: children, files, consumers, providers, driver, resources,
// unbind, unlink.
//
// When Unregister returns, no callback into the device's driver is
// running or will run, and the owner may unload. It never waits for a
// consumer to close a handle or put a reference — only for calls in flight.
//
// Then it audits: the device's shell must be referenced by nobody but the
// registration. A reference still held (see Get) is recorded as
// check.ReferenceAfterUnregister naming its holders (with the stacks that
// took them under sever.WithTracking) and returned as a *sever.HoldersError
// wrapping sever.ErrBusy; the device is removed either way.
//
// If ctx ends while calls are still in flight, the sever that waits for
// them records check.SeverTimeout and Unregister continues, returning that
// error: the caller gave up the guarantee. A second Unregister waits for the
// first and returns nil. Unregister must not be called from the device's
// own Probe or Remove, nor from one of its (or a descendant's) attribute
// callbacks or char device operations (use UnregisterSelf). Called from
// inside such a callback it would wait for that callback forever; instead,
// after a grace of tens of milliseconds, it returns an error wrapping
// sever.ErrDeadlock that names the callback's file or char device and
// points to UnregisterSelf, recording check.Misuse in the core's log. The
// removal stops at the file that refused: the device keeps its state and
// driver, and what was undone before that file is gone — its newer
// children and, if the file is the device's own, its children and the
// files severed before that one (they refuse new calls); an Unregister
// from another goroutine after the callback has returned finishes the
// removal, releasing what is still open.
func (d *Device) Unregister(ctx context.Context) error {
	// A device still being registered is not removed half-made: wait for
	// its Register to return (a parent's removal finds its children before
	// their Register has finished). One whose Register failed is gone.
	select {
	case <-d.ready:
	case <-ctx.Done():
		return &sever.ObjectError{Object: d.path, Err: ctx.Err()}
	}
	// Refuse new children, bindings, resources and severables.
	d.mu.Lock()
	switch d.state {
	case StateRemoved, StateRemoving:
		// Another Unregister has begun, or has set StateRemoved and is
		// still putting the registration's reference and leaving the
		// tree: wait for it to close done (a failed Register closed it
		// already). Returning at StateRemoved let a parent's removal,
		// whose children step called this, go on to its audit before
		// the child had dropped its pin on the parent (found by
		// TestUnregisterDuringChildRegisterPutsParentOnce, ~1 run in 2
		// once its child's Unregister started a little later).
		d.mu.Unlock()
		select {
		case <-d.done:
			return nil
		case <-ctx.Done():
			return &sever.ObjectError{Object: d.path, Err: ctx.Err()}
		}
	}
	prev := d.state
	d.state = StateRemoving
	d.mu.Unlock()
	d.core.undeferProbe(d)
	// Take the device's entry on its parent's undo list, unless a removal
	// of the parent has (it is the caller, or waits for this call): a
	// parent's removal that comes now waits for this one, and nobody
	// unregisters the device a second time.
	took := d.takeInParent()

	err := d.remove(ctx, nil, false)
	if errors.Is(err, sever.ErrDeadlock) {
		// Called from inside one of the device's own callbacks: the sever
		// of that callback's file or char device refused to wait for its
		// caller. The removal stopped there; the device goes back to its
		// state and a removal from outside finishes it.
		d.mu.Lock()
		d.state = prev
		d.mu.Unlock()
		if took {
			d.parent.putBack(d.inParent)
		}
		return d.selfRemovalError(err)
	}
	d.mu.Lock()
	d.state = StateRemoved
	d.mu.Unlock()

	// The audit of seed 004 §3: "verifying reference count is 0 after
	// unregistering", once the registration's own reference is put. The put
	// comes before done is closed: the last put drops this device's pin on
	// its parent, and a parent's Unregister waiting on done audits next.
	d.ref.Put(nil)
	err = errors.Join(err, d.ref.Audit(d.core.log, 0))
	// Leave the parent's children and end the entry on its undo list only
	// now: a parent's removal waits for that entry (finished here, or by
	// the parent's own unwind when this call returns) and then audits, so
	// it must find the device's pin on it already dropped (found by sever
	// stress: leaving first let the parent audit in between and report
	// the child's pin as a leak).
	d.unlinkFromTree()
	if took {
		d.parent.finish(d.inParent)
	}
	close(d.done)
	return err
}

// takeInParent moves the device's entry on its parent's undo list from
// pending to undoing, if it is pending, and reports whether it did.
func (d *Device) takeInParent() bool {
	p, e := d.parent, d.inParent
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.pendingLocked(e) {
		return false
	}
	p.takeLocked(e)
	return true
}

// selfRemovalError is Unregister's answer to a call from inside one of the
// device's own callbacks (err wraps sever.ErrDeadlock): one sentence that
// names the callback — the innermost object of err, the file or char device
// whose sever refused to wait for its caller — and the self-removal path.
func (d *Device) selfRemovalError(err error) error {
	what := refusedCallback(err)
	return &sever.ObjectError{Object: d.path, Err: fmt.Errorf(
		"Unregister called from inside a callback of %s, which it would wait for forever; "+
			"the device stays registered, its removal begun (that file or char device refuses new calls) "+
			"and finished by an Unregister from another goroutine; "+
			"from an attribute callback use Device.UnregisterSelf, from any other, unregister from another goroutine: %w", what, sever.ErrDeadlock)}
}

// unregistering reports whether d's Unregister has begun.
func (d *Device) unregistering() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state >= StateRemoving
}

// selfUnbindError is Unbind's answer to a call from inside a callback of
// the binding (err wraps sever.ErrDeadlock), as selfRemovalError is
// Unregister's.
func (d *Device) selfUnbindError(err error) error {
	return &sever.ObjectError{Object: d.path, Err: fmt.Errorf(
		"Unbind called from inside a callback of %s, which it would wait for forever; "+
			"the device stays unbinding with its driver, the unbind begun (that file or char device refuses new calls) "+
			"and finished by an Unbind or Unregister from another goroutine: %w", refusedCallback(err), sever.ErrDeadlock)}
}

// refusedCallback names the callback whose sever refused to wait for its
// caller: the innermost object of err.
func refusedCallback(err error) string {
	what := "one of its callbacks"
	var oe *sever.ObjectError
	for e := err; errors.As(e, &oe); e = oe.Err {
		what = oe.Object
	}
	return what
}
