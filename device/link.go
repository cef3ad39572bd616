package device

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/internal/ilist"
)

// LinkMode is what a consumer declares about its supplier going away.
type LinkMode int

const (
	// LinkManaged: the consumer's driver cannot outlive the supplier's.
	// The consumer does not probe until the supplier is bound (its probe is
	// deferred and retried), and when the supplier unbinds — unplugged,
	// unloaded — the consumer is unbound first. This is what the issue
	// calls DL_FLAG_AUTOREMOVE_CONSUMER; in Linux it is the default managed
	// link.
	LinkManaged LinkMode = iota
	// LinkStateless: the consumer stays bound when the supplier goes and
	// sees ErrNoDevice on its next call through its handles (seed 000's
	// model; Linux's DL_FLAG_STATELESS). The link only orders: the supplier
	// is never removed before its consumers' in-flight calls drain, which
	// the provider's revocation already guarantees.
	LinkStateless
)

func (m LinkMode) String() string {
	switch m {
	case LinkManaged:
		return "managed"
	case LinkStateless:
		return "stateless"
	}
	return fmt.Sprintf("LinkMode(%d)", int(m))
}

// Link is a consumer's dependency on a supplier. It lives until Delete or
// until either device is unregistered. A link pins both devices' shells.
type Link struct {
	core     *Core
	consumer *Device
	supplier *Device
	mode     LinkMode
	deleted  bool // guarded by core.links.mu

	// The link's places on the consumer's suppliers (onCons) and the
	// supplier's consumers (onSup) lists, guarded by core.links.mu: Delete
	// is O(1), so a supplier with n consumers that are unplugged one by one
	// costs O(n).
	onCons, onSup ilist.Links[Link]
}

type linkTable struct {
	mu sync.Mutex
}

type devLinks struct {
	suppliers ilist.List[Link] // links where the device is the consumer, oldest first, through onCons
	consumers ilist.List[Link] // links where the device is the supplier, oldest first, through onSup
}

// AddLink records that consumer depends on supplier. A link that would make
// a device depend on itself or on its own descendant is refused with an
// error wrapping sever.ErrInvalid (it would deadlock the removal path);
// one involving a device being removed, with sever.ErrNoDevice. Adding a
// managed link to a bound consumer whose supplier is not bound is allowed;
// the consumer stays bound until the supplier next unbinds.
func (c *Core) AddLink(consumer, supplier *Device, mode LinkMode) (*Link, error) {
	obj := "device: link " + consumer.path + " -> " + supplier.path
	if consumer.core != c || supplier.core != c {
		return nil, &sever.ObjectError{Object: obj, Err: sever.ErrInvalid}
	}
	for x := supplier; x != nil; x = x.parent {
		if x == consumer {
			return nil, &sever.ObjectError{Object: obj, Err: fmt.Errorf("supplier depends on consumer: %w", sever.ErrInvalid)}
		}
	}
	if consumer.unregistering() || supplier.unregistering() {
		return nil, &sever.ObjectError{Object: obj, Err: sever.ErrNoDevice}
	}
	l := &Link{core: c, consumer: consumer, supplier: supplier, mode: mode}
	consumer.Get(l)
	supplier.Get(l)
	c.links.mu.Lock()
	consumer.links.suppliers.PushBack(l, &l.onCons)
	supplier.links.consumers.PushBack(l, &l.onSup)
	c.links.mu.Unlock()
	return l, nil
}

// Consumer returns the consuming device.
func (l *Link) Consumer() *Device { return l.consumer }

// Supplier returns the supplying device.
func (l *Link) Supplier() *Device { return l.supplier }

// Mode returns the link's mode.
func (l *Link) Mode() LinkMode { return l.mode }

// Delete removes the link and drops its references. A second Delete, or
// Delete after a device was unregistered, does nothing.
func (l *Link) Delete() {
	t := &l.core.links
	t.mu.Lock()
	if l.deleted {
		t.mu.Unlock()
		return
	}
	l.deleted = true
	l.consumer.links.suppliers.Remove(&l.onCons)
	l.supplier.links.consumers.Remove(&l.onSup)
	t.mu.Unlock()
	l.consumer.Put(l)
	l.supplier.Put(l)
}

// suppliersReady reports whether every managed supplier of d is bound.
func (t *linkTable) suppliersReady(d *Device) bool {
	t.mu.Lock()
	var sup []*Device
	for l := range d.links.suppliers.All() {
		if l.mode == LinkManaged {
			sup = append(sup, l.supplier)
		}
	}
	t.mu.Unlock()
	for _, s := range sup {
		if st := s.State(); st != StateBound {
			return false
		}
	}
	return true
}

// purge deletes every link of d.
func (t *linkTable) purge(d *Device) {
	t.mu.Lock()
	ls := slices.AppendSeq(slices.Collect(d.links.suppliers.All()), d.links.consumers.All())
	t.mu.Unlock()
	for _, l := range ls {
		l.Delete()
	}
}

// unbindManagedConsumers unbinds, newest link first, every consumer that
// declared LinkManaged on d. Called with d.lock held (lock order: supplier
// before consumer; AddLink refuses the cycles that would invert it).
func (d *Device) unbindManagedConsumers(ctx context.Context) error {
	t := &d.core.links
	t.mu.Lock()
	var cons []*Device
	for l := range d.links.consumers.Backward() {
		if l.mode == LinkManaged {
			cons = append(cons, l.consumer)
		}
	}
	t.mu.Unlock()
	var errs []error
	for _, cd := range cons {
		errs = append(errs, cd.Unbind(ctx))
	}
	return errors.Join(errs...)
}

// deferProbe remembers d, and the driver that wanted it, for a retry when
// its suppliers are bound.
func (c *Core) deferProbe(d *Device, drv *Driver) {
	c.mu.Lock()
	c.deferred[d] = drv
	c.mu.Unlock()
}

func (c *Core) undeferProbe(d *Device) {
	c.mu.Lock()
	delete(c.deferred, d)
	c.mu.Unlock()
}

// retryDeferred probes again every deferred device whose suppliers are now
// all bound. It runs after every successful bind, with no device lock held
// by the caller's own binding.
func (c *Core) retryDeferred(ctx context.Context) {
	for {
		c.mu.Lock()
		var d *Device
		var drv *Driver
		for x, xd := range c.deferred {
			if c.links.suppliersReady(x) {
				d, drv = x, xd
				break
			}
		}
		if d != nil {
			delete(c.deferred, d)
		}
		c.mu.Unlock()
		if d == nil {
			return
		}
		if d.Driver() == nil && !d.unregistering() && drv.live() {
			_ = d.probe(ctx, drv) // errors stay with the device, as in Linux
		}
	}
}
