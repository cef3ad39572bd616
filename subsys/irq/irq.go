// Package irq is the interrupt subsystem: a domain maps a device's
// hardware interrupt lines to machine-wide IRQ numbers; consumers request
// an IRQ with a handler and free it.
//
// This is where seed 000 (DESIGN.md, "Seed 000") began: a USB GPIO expander provides an interrupt
// domain, a consumer elsewhere requests one of its IRQs, and the expander
// is unplugged. Here the domain's removal detaches every requested IRQ:
// handlers running are drained and never run again, each Request becomes a
// shell whose Free still works and leaks nothing, and the per-IRQ nodes
// (/irq/<n>, the procfs entries whose leak the seed's patch fixed) are
// removed. Removal never waits for a consumer to call Free.
package irq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// Handler handles one interrupt. It is the consumer's code. When: once per
// Fire of its IRQ while its Request is live, on the firing goroutine (the
// provider's interrupt path), concurrently with handlers of other IRQs.
// Never after Free returns or the domain's removal has drained it. What may
// be gone: nothing it was given; the provider's hardware may be going. May
// it block: no longer than an interrupt handler may — its Free and the
// domain's removal wait for it. A panic is recovered and recorded as
// check.DriverFault.
type Handler func(irq int)

type spaceKey struct{}

// space is the machine's IRQ number space and /irq directory.
type space struct {
	mu    sync.Mutex
	next  int
	descs map[int]*desc
	dir   *kernfs.Node
}

func irqSpace(c *device.Core) *space {
	return device.Local(c, spaceKey{}, func() *space {
		t := c.Sysfs()
		dir, err := t.AddDir(t.Root(), kernfs.Dir{Name: "irq"})
		if err != nil {
			dir, _ = t.Lookup("/irq")
		}
		return &space{next: 1, descs: make(map[int]*desc), dir: dir}
	})
}

// Domain maps the hardware interrupts of one device. It is a child device
// of its provider, so the provider's removal path removes it children-first.
// It is a sever.Scope whose children are the requests on its IRQs: severing
// the domain severs every request, newest first, and a request made while
// the domain is severing is severed at once.
type Domain struct {
	dev   *device.Device
	core  *device.Core
	sp    *space
	size  int
	s     *sever.Scope
	mu    sync.Mutex
	byHw  map[int]*desc
	fired atomic.Int64
}

// desc is one mapped IRQ.
type desc struct {
	d     *Domain
	irq   int
	hwirq int
	node  *kernfs.Node
	mu    sync.Mutex
	reqs  []*Request
}

// AddDomain registers a domain of size hardware IRQs named name under
// parent. Called from parent's Probe, it belongs to that binding.
func AddDomain(ctx context.Context, parent *device.Device, name string, size int) (*Domain, error) {
	c := parent.Core()
	dev, err := c.Register(ctx, device.Config{Name: "irqdomain-" + name, Parent: parent})
	if err != nil {
		return nil, err
	}
	d := &Domain{dev: dev, core: c, sp: irqSpace(c), size: size, byHw: make(map[int]*desc)}
	d.s = sever.NewScope(dev.Path()+": irq domain", nil, c.Options()...)
	// The domain joins its device's removal path as a provider.
	if _, err := dev.AddSeverable("irq domain", device.StageProviders, d.sever); err != nil {
		_ = dev.Unregister(ctx) // the error that matters is err
		return nil, err
	}
	return d, nil
}

// Device returns the domain's device.
func (d *Domain) Device() *device.Device { return d.dev }

// Remove removes the domain through the device removal path
// (irq_domain_remove).
func (d *Domain) Remove(ctx context.Context) error { return d.dev.Unregister(ctx) }

// Map returns the IRQ number of hwirq, mapping it on first use
// (irq_create_mapping) and creating its /irq/<n> node.
func (d *Domain) Map(hwirq int) (int, error) {
	if hwirq < 0 || hwirq >= d.size {
		return 0, &sever.ObjectError{Object: d.dev.Path(), Err: fmt.Errorf("hwirq %d of %d: %w", hwirq, d.size, sever.ErrInvalid)}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.s.Err() != nil {
		return 0, &sever.ObjectError{Object: d.dev.Path(), Err: sever.ErrNoDevice}
	}
	if ds, ok := d.byHw[hwirq]; ok {
		return ds.irq, nil
	}
	d.sp.mu.Lock()
	n := d.sp.next
	d.sp.next++
	d.sp.mu.Unlock()
	ds := &desc{d: d, irq: n, hwirq: hwirq}
	t := d.core.Sysfs()
	node, err := t.AddDir(d.sp.dir, kernfs.Dir{Name: strconv.Itoa(n), Hidden: true})
	if err != nil {
		return 0, err
	}
	for _, a := range []kernfs.Attr{
		{Name: "hwirq", Show: func(c *kernfs.Call, b []byte) ([]byte, error) { return fmt.Appendf(b, "%d\n", hwirq), nil }},
		{Name: "domain", Show: func(c *kernfs.Call, b []byte) ([]byte, error) { return fmt.Appendf(b, "%s\n", d.dev.Path()), nil }},
		{Name: "actions", Show: ds.showActions},
	} {
		if _, err := t.AddAttr(node, a); err != nil {
			_ = t.Remove(context.Background(), node) // nothing of it was visible
			return 0, err
		}
	}
	if err := t.Activate(node); err != nil {
		return 0, err
	}
	ds.node = node
	d.byHw[hwirq] = ds
	d.sp.mu.Lock()
	d.sp.descs[n] = ds
	d.sp.mu.Unlock()
	return n, nil
}

func (ds *desc) showActions(c *kernfs.Call, b []byte) ([]byte, error) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for i, r := range ds.reqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.name...)
	}
	return append(b, '\n'), nil
}

// Fire raises hwirq: the provider's interrupt path calls it. It runs every
// handler requested on the IRQ, on this goroutine, and returns how many
// ran. After the domain is removed it runs none and returns an error
// wrapping sever.ErrNoDevice.
func (d *Domain) Fire(hwirq int) (int, error) {
	d.mu.Lock()
	ds, ok := d.byHw[hwirq]
	d.mu.Unlock()
	if d.s.Err() != nil {
		return 0, &sever.ObjectError{Object: d.dev.Path(), Err: sever.ErrNoDevice}
	}
	if !ok {
		return 0, nil
	}
	ds.mu.Lock()
	reqs := slices.Clone(ds.reqs)
	ds.mu.Unlock()
	ran := 0
	for _, r := range reqs {
		if r.run() {
			ran++
		}
	}
	d.fired.Add(1)
	return ran, nil
}

// sever detaches every requested IRQ — the domain's scope severs its
// requests: no handler runs from here on, the running ones drain, and each
// Request becomes a shell — and removes the /irq nodes. It runs in the
// domain device's removal path.
func (d *Domain) sever(ctx context.Context) error {
	if err := d.s.Sever(ctx); err != nil {
		return err
	}
	d.mu.Lock()
	descs := make([]*desc, 0, len(d.byHw))
	for _, ds := range d.byHw {
		descs = append(descs, ds)
	}
	d.byHw = map[int]*desc{}
	d.mu.Unlock()
	var errs []error
	for _, ds := range descs {
		ds.mu.Lock()
		ds.reqs = nil
		ds.mu.Unlock()
		errs = append(errs, d.core.Sysfs().Remove(ctx, ds.node))
		d.sp.mu.Lock()
		delete(d.sp.descs, ds.irq)
		d.sp.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Request is a consumer's requested IRQ: live until Free or until the
// domain is removed, then a shell.
//
//	live ──Free──▶ freed
//	  └──domain removed──▶ shell ──Free──▶ freed
type Request struct {
	ds      *desc
	name    string
	site    string // "irq N (name): handler"
	handler Handler
	s       *sever.Scope // the handler's runs; a child of the domain's scope
	freed   atomic.Bool
}

// Request requests irq for handler under name (request_irq). It fails with
// an error wrapping sever.ErrNotExist for an IRQ that is not mapped and
// sever.ErrNoDevice for one whose domain is being removed.
func RequestIRQ(c *device.Core, irq int, name string, handler Handler) (*Request, error) {
	sp := irqSpace(c)
	sp.mu.Lock()
	ds := sp.descs[irq]
	sp.mu.Unlock()
	obj := fmt.Sprintf("irq %d", irq)
	if ds == nil {
		return nil, &sever.ObjectError{Object: obj, Err: sever.ErrNotExist}
	}
	r := &Request{ds: ds, name: name, handler: handler, s: sever.NewScope(obj+" ("+name+")", nil, c.Options()...)}
	r.site = r.s.Name() + ": handler"
	// Adopt severs r at once if the domain is severing: the race with the
	// domain's removal is handled there.
	if err := ds.d.s.Adopt(context.Background(), r.s); err != nil {
		return nil, &sever.ObjectError{Object: obj, Err: sever.ErrNoDevice}
	}
	ds.mu.Lock()
	ds.reqs = append(ds.reqs, r)
	ds.mu.Unlock()
	return r, nil
}

// IRQ returns the requested IRQ number.
func (r *Request) IRQ() int { return r.ds.irq }

// Err returns nil while the request is live, an error wrapping
// sever.ErrNoDevice once its domain is gone, one wrapping sever.ErrClosed
// after Free.
func (r *Request) Err() error {
	if r.freed.Load() {
		return &sever.ObjectError{Object: r.s.Name(), Err: sever.ErrClosed}
	}
	return r.s.Err()
}

// run runs the handler through the request's scope (a panic is recovered
// and recorded as check.DriverFault) and reports whether it ran.
func (r *Request) run() bool {
	err := r.s.Call(r.site, func() error { r.handler(r.ds.irq); return nil })
	return err == nil || !errors.Is(err, r.s.Gone())
}

// Free releases the IRQ (free_irq): it returns once the handler is not
// running and never will again. On a shell it only marks the request
// freed. A second Free returns an error wrapping sever.ErrClosed. Free
// must not be called from the handler.
func (r *Request) Free(ctx context.Context) error {
	if r.freed.Swap(true) {
		return &sever.ObjectError{Object: r.s.Name(), Err: sever.ErrClosed}
	}
	ds := r.ds
	ds.mu.Lock()
	ds.reqs = slices.DeleteFunc(ds.reqs, func(x *Request) bool { return x == r })
	ds.mu.Unlock()
	return r.s.Sever(ctx) // a severed child leaves the domain's list by itself
}

// Requested returns the number of live requests on the machine's IRQs, for
// leak checks.
func Requested(c *device.Core) int {
	sp := irqSpace(c)
	sp.mu.Lock()
	descs := make([]*desc, 0, len(sp.descs))
	for _, ds := range sp.descs {
		descs = append(descs, ds)
	}
	sp.mu.Unlock()
	n := 0
	for _, ds := range descs {
		ds.mu.Lock()
		n += len(ds.reqs)
		ds.mu.Unlock()
	}
	return n
}
