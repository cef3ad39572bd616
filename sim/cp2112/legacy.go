package cp2112

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/irq"
)

// legacyDomain is the naive driver's interrupt domain (BugLeakIRQs): the
// driver's own table of descriptors, in the shape seed 000 started from.
// Requesting an interrupt appends an action to the descriptor and creates
// /irq/N/<name> (register_handler_proc). Removing the domain frees the
// descriptors (irq_free_descs) without detaching their actions, and
// removes /irq/N only where no action entry is left under it, as
// remove_proc_entry does — so the consumer's entry, and the directory
// around it, leak. The consumer is never told: its interrupt simply never
// fires again, and its free_irq at unbind touches the freed descriptor.
type legacyDomain struct {
	b     *Bridge
	t     *kernfs.Tree
	mu    sync.Mutex
	descs map[int]*legacyDesc // by hwirq
	gone  bool
}

type legacyDesc struct {
	irq   int
	node  *kernfs.Node
	state *check.State[*legacyActions] // struct irq_desc: freed by the domain's removal
}

type legacyActions struct {
	mu      sync.Mutex
	actions []*legacyIRQ
}

// legacyIRQ is one requested interrupt on the naive domain.
type legacyIRQ struct {
	d       *legacyDesc
	name    string
	handler irq.Handler
	t       *kernfs.Tree
	node    *kernfs.Node
}

type irqNumKey struct{}

type irqNumbers struct {
	mu   sync.Mutex
	next int
}

func newLegacyDomain(b *Bridge) *legacyDomain {
	return &legacyDomain{b: b, t: b.m.Sysfs(), descs: make(map[int]*legacyDesc)}
}

// irqDir returns /irq, making it if no one has.
func (ld *legacyDomain) irqDir() (*kernfs.Node, error) {
	if n, err := ld.t.Lookup("/irq"); err == nil {
		return n, nil
	}
	n, err := ld.t.AddDir(ld.t.Root(), kernfs.Dir{Name: "irq"})
	if err != nil {
		return ld.t.Lookup("/irq")
	}
	return n, nil
}

// request maps hwirq on first use and adds an action for handler.
func (ld *legacyDomain) request(hwirq int, name string, handler irq.Handler) (IRQ, error) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ds := ld.descs[hwirq]
	if ds == nil && !ld.gone {
		nums := device.Local(ld.b.dev.Core(), irqNumKey{}, func() *irqNumbers { return &irqNumbers{next: 200} })
		nums.mu.Lock()
		n := nums.next
		nums.next++
		nums.mu.Unlock()
		dir, err := ld.irqDir()
		if err != nil {
			return nil, err
		}
		node, err := ld.t.AddDir(dir, kernfs.Dir{Name: strconv.Itoa(n)})
		if err != nil {
			return nil, err
		}
		ds = &legacyDesc{irq: n, node: node}
		ds.state = check.NewState(ld.b.m.Log(), fmt.Sprintf("irq %d descriptor", n), &legacyActions{})
		ld.descs[hwirq] = ds
	}
	if ds == nil {
		return nil, fmt.Errorf("cp2112: domain removed")
	}
	acts, ok := ds.state.Use("request_irq")
	if !ok {
		return nil, fmt.Errorf("cp2112: irq %d freed", ds.irq)
	}
	r := &legacyIRQ{d: ds, name: name, handler: handler, t: ld.t}
	node, err := ld.t.AddDir(ds.node, kernfs.Dir{Name: name})
	if err != nil {
		return nil, err
	}
	r.node = node
	acts.mu.Lock()
	acts.actions = append(acts.actions, r)
	acts.mu.Unlock()
	return r, nil
}

// fire runs the actions of hwirq's descriptor.
func (ld *legacyDomain) fire(hwirq int) {
	ld.mu.Lock()
	ds := ld.descs[hwirq]
	ld.mu.Unlock()
	if ds == nil {
		return
	}
	acts, ok := ds.state.Use("handle_irq")
	if !ok {
		return
	}
	acts.mu.Lock()
	run := slices.Clone(acts.actions)
	acts.mu.Unlock()
	for _, r := range run {
		r.handler(ds.irq)
	}
}

// remove is the naive irq_domain_remove, a managed resource of the
// binding: it frees every descriptor without detaching its actions.
func (ld *legacyDomain) remove() {
	ld.mu.Lock()
	ld.gone = true
	descs := ld.descs
	ld.descs = map[int]*legacyDesc{}
	ld.mu.Unlock()
	for _, ds := range descs {
		if ents, err := ld.t.Readdir(ds.node); err == nil && len(ents) == 0 {
			if err := ld.t.Remove(context.Background(), ds.node); err != nil {
				ld.b.m.Record(sim.KindStep, ds.node.Path(), "irq_domain_remove: "+err.Error())
			}
		}
		ds.state.Free()
		ld.b.m.Record(sim.KindFreed, fmt.Sprintf("irq %d descriptor", ds.irq), "irq_domain_remove; requested actions not freed")
	}
}

func (r *legacyIRQ) IRQ() int { return r.d.irq }

// Err is always nil: the naive domain never tells its consumers.
func (r *legacyIRQ) Err() error { return nil }

// Free is free_irq on the naive domain: it uses the descriptor, which the
// domain's removal may have freed.
func (r *legacyIRQ) Free(ctx context.Context) error {
	acts, ok := r.d.state.Use("free_irq")
	if !ok {
		return nil // the kernel would now be scribbling on freed memory
	}
	acts.mu.Lock()
	acts.actions = slices.DeleteFunc(acts.actions, func(x *legacyIRQ) bool { return x == r })
	acts.mu.Unlock()
	return r.t.Remove(ctx, r.node)
}
