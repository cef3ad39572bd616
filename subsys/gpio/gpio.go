// Package gpio is the GPIO subsystem: a chip provides lines; consumers
// request lines and get or set their values, or watch them for edges.
//
// A chip is a provider in seed 000's sense (DESIGN.md, "Seed 000"). When it is removed — its
// parent unplugged, its driver unbound — every consumer keeps its Line or
// LineRequest as a shell: each call returns an error wrapping
// sever.ErrNoDevice, a reader waiting for an edge wakes with
// EventErr|EventHup, and Close still works. Removal never waits for a
// consumer to close.
package gpio

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/device"
)

// ChipOps is the chip driver's side. Its methods are provider code: they
// are called on the consumer's goroutine, any number of times, concurrently,
// only while the chip is live — the chip's removal waits for the calls in
// flight and calls none after, so they may touch the driver's state without
// a lock against its Remove. They may block on the hardware; on a surprise
// removal the hardware fails fast, so they must return its error rather
// than retry.
type ChipOps interface {
	Get(offset int) (bool, error)
	Set(offset int, value bool) error
}

// Chip is a registered GPIO chip: a child device ("gpiochipN", class
// "gpio") of the device that provides it.
type Chip struct {
	dev   *device.Device
	label string
	n     int
	prov  *device.Provider[ChipOps]

	mu    sync.Mutex
	owner []string                  // consumer per line; "" if free
	reqs  map[*LineRequest]struct{} // requests watching edges
	gone  bool
}

type chipsKey struct{}

type chips struct {
	mu    sync.Mutex
	next  int
	class *device.Class
	byLbl map[string]*Chip
}

func registry(c *device.Core) *chips {
	return device.Local(c, chipsKey{}, func() *chips {
		cl, err := c.NewClass("gpio", nil)
		if err != nil { // a racing first use made it
			cl = c.Class("gpio")
		}
		return &chips{class: cl, byLbl: make(map[string]*Chip)}
	})
}

// AddChip registers a chip of n lines with label under parent
// (gpiochip_add). Called from parent's Probe, the chip belongs to that
// binding and is removed when it ends, before the parent driver's Remove.
func AddChip(ctx context.Context, parent *device.Device, label string, n int, ops ChipOps) (*Chip, error) {
	r := registry(parent.Core())
	r.mu.Lock()
	if _, dup := r.byLbl[label]; dup {
		r.mu.Unlock()
		return nil, &sever.ObjectError{Object: "gpio: " + label, Err: sever.ErrExist}
	}
	id := r.next
	r.next++
	r.mu.Unlock()
	dev, err := parent.Core().Register(ctx, device.Config{Name: fmt.Sprintf("gpiochip%d", id), Parent: parent, Class: r.class})
	if err != nil {
		return nil, err
	}
	c := &Chip{dev: dev, label: label, n: n, owner: make([]string, n), reqs: make(map[*LineRequest]struct{})}
	if c.prov, err = device.NewProvider[ChipOps](dev, "gpio", ops); err != nil {
		_ = dev.Unregister(ctx) // the error that matters is err
		return nil, err
	}
	c.prov.OnRevoke(c.severRequests)
	r.mu.Lock()
	r.byLbl[label] = c
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		delete(r.byLbl, label)
		r.mu.Unlock()
	}
	if _, err := dev.AddResource("gpio label", forget); err != nil {
		// The chip is being removed already (unplugged during Probe):
		// the removal path will not free the label; free it here.
		forget()
		return nil, err
	}
	return c, nil
}

// Lookup finds a live chip by label (gpiochip_find).
func Lookup(c *device.Core, label string) (*Chip, error) {
	r := registry(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.byLbl[label]; ok {
		return ch, nil
	}
	return nil, &sever.ObjectError{Object: "gpio: " + label, Err: sever.ErrNoDevice}
}

// Device returns the chip's device.
func (c *Chip) Device() *device.Device { return c.dev }

// Label returns the chip's label.
func (c *Chip) Label() string { return c.label }

// Lines returns the number of lines.
func (c *Chip) Lines() int { return c.n }

// Remove removes the chip through the device removal path
// (gpiochip_remove). It waits for calls in flight, never for consumers.
func (c *Chip) Remove(ctx context.Context) error { return c.dev.Unregister(ctx) }

// severRequests runs once the chip is revoked: every line request becomes
// a shell, and readers waiting for edges wake with EventErr|EventHup.
func (c *Chip) severRequests() {
	c.mu.Lock()
	c.gone = true
	reqs := c.reqs
	c.reqs = nil
	c.mu.Unlock()
	for r := range reqs {
		r.q.Sever()
	}
}

func (c *Chip) claim(offsets []int, consumer string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return c.prov.Err()
	}
	for i, o := range offsets {
		if o < 0 || o >= c.n {
			return &sever.ObjectError{Object: c.dev.Path(), Err: fmt.Errorf("line %d of %d: %w", o, c.n, sever.ErrInvalid)}
		}
		if c.owner[o] != "" || slicesContains(offsets[:i], o) {
			return &sever.ObjectError{Object: c.dev.Path(), Err: fmt.Errorf("line %d requested by %q: %w", o, c.owner[o], sever.ErrBusy)}
		}
	}
	for _, o := range offsets {
		c.owner[o] = consumer
	}
	return nil
}

func (c *Chip) unclaim(offsets []int) {
	c.mu.Lock()
	for _, o := range offsets {
		c.owner[o] = ""
	}
	c.mu.Unlock()
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Line is one requested line, for in-process consumers (gpiod_get).
type Line struct {
	c      *Chip
	h      *device.Handle[ChipOps]
	offset int
}

// RequestLine requests line offset for consumer. It fails with an error
// wrapping sever.ErrBusy if the line is taken, sever.ErrNoDevice once the
// chip is removed.
func (c *Chip) RequestLine(offset int, consumer string) (*Line, error) {
	h, err := c.prov.Open(consumer)
	if err != nil {
		return nil, err
	}
	if err := c.claim([]int{offset}, consumer); err != nil {
		_ = h.Close() // a fresh handle: Close cannot fail
		return nil, err
	}
	return &Line{c: c, h: h, offset: offset}, nil
}

// Value reads the line.
func (l *Line) Value() (v bool, err error) {
	err = l.h.Do(func(ops ChipOps) (err error) { v, err = ops.Get(l.offset); return })
	return v, err
}

// SetValue drives the line.
func (l *Line) SetValue(v bool) error {
	return l.h.Do(func(ops ChipOps) error { return ops.Set(l.offset, v) })
}

// Close frees the line. It never calls into the chip and works the same
// after the chip is gone; a second Close returns an error wrapping
// sever.ErrClosed.
func (l *Line) Close() error {
	if err := l.h.Close(); err != nil {
		return err
	}
	l.c.unclaim([]int{l.offset})
	return nil
}

// Edge selects the edges a LineRequest reports.
type Edge int

const (
	EdgeNone    Edge = 0
	EdgeRising  Edge = 1
	EdgeFalling Edge = 2
	EdgeBoth         = EdgeRising | EdgeFalling
)

// LineEvent is one edge seen on a requested line.
type LineEvent struct {
	Offset int
	Rising bool
	Seq    uint64 // per request, from 1; a gap means events were dropped
	Time   time.Time
}

// LineRequest is a set of requested lines with an event buffer: the object
// behind a GPIO character-device line-request file. Its wait queue belongs
// to the request (the framework's shell), not to the chip, and is freed at
// the request's last reference, never by the chip's removal (seed 002).
type LineRequest struct {
	c       *Chip
	h       *device.Handle[ChipOps]
	offsets []int
	edges   Edge
	q       *sever.WaitQueue
	ref     *sever.Ref // the request's own + one per ReadEvent in progress

	mu      sync.Mutex
	events  []LineEvent
	max     int
	seq     uint64
	dropped uint64
}

// RequestConfig describes a line request.
type RequestConfig struct {
	Offsets  []int
	Consumer string
	Edges    Edge
	// Buffer is the most events kept unread; 0 means 16. Older events are
	// kept, newer ones dropped (and counted by Dropped) when full.
	Buffer int
}

// RequestLines requests cfg.Offsets as one request.
func (c *Chip) RequestLines(cfg RequestConfig) (*LineRequest, error) {
	h, err := c.prov.Open(cfg.Consumer)
	if err != nil {
		return nil, err
	}
	if err := c.claim(cfg.Offsets, cfg.Consumer); err != nil {
		_ = h.Close() // a fresh handle: Close cannot fail
		return nil, err
	}
	name := fmt.Sprintf("%s: line request (%s)", c.dev.Path(), cfg.Consumer)
	opts := c.dev.Core().Options()
	r := &LineRequest{c: c, h: h, offsets: append([]int(nil), cfg.Offsets...), edges: cfg.Edges,
		q: sever.NewWaitQueue(name, opts...), max: cfg.Buffer}
	if r.max <= 0 {
		r.max = 16
	}
	r.ref = sever.NewRef(name, r.q.Free, opts...)
	c.mu.Lock()
	if c.gone { // removed since claim
		c.mu.Unlock()
		r.q.Sever()
	} else {
		c.reqs[r] = struct{}{}
		c.mu.Unlock()
	}
	return r, nil
}

// Values reads every requested line, in request order.
func (r *LineRequest) Values() ([]bool, error) {
	vs := make([]bool, len(r.offsets))
	err := r.h.Do(func(ops ChipOps) error {
		for i, o := range r.offsets {
			v, err := ops.Get(o)
			if err != nil {
				return err
			}
			vs[i] = v
		}
		return nil
	})
	return vs, err
}

// SetValues drives every requested line, in request order.
func (r *LineRequest) SetValues(vs []bool) error {
	if len(vs) != len(r.offsets) {
		return &sever.ObjectError{Object: r.c.dev.Path(), Err: sever.ErrInvalid}
	}
	return r.h.Do(func(ops ChipOps) error {
		for i, o := range r.offsets {
			if err := ops.Set(o, vs[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Edge reports an edge on line offset: the chip driver's interrupt path
// calls it. It queues an event on every request watching that edge and
// wakes their readers. After the chip is removed it does nothing and
// returns an error wrapping sever.ErrNoDevice.
func (c *Chip) Edge(offset int, rising bool) error {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return c.prov.Err()
	}
	var hit []*LineRequest
	for r := range c.reqs {
		if slicesContains(r.offsets, offset) && (rising && r.edges&EdgeRising != 0 || !rising && r.edges&EdgeFalling != 0) {
			hit = append(hit, r)
		}
	}
	c.mu.Unlock()
	now := time.Now()
	for _, r := range hit {
		// The request may be closed since the snapshot, and its queue
		// freed at its last reference: hold one while queueing and
		// notifying (found by sever stress, seed 21: Notify after Free).
		if !r.ref.TryGet(c) {
			continue
		}
		r.mu.Lock()
		r.seq++
		if len(r.events) < r.max {
			r.events = append(r.events, LineEvent{Offset: offset, Rising: rising, Seq: r.seq, Time: now})
		} else {
			r.dropped++
		}
		r.mu.Unlock()
		r.q.Notify(sever.EventIn)
		r.ref.Put(c)
	}
	return nil
}

// ReadEvent returns the oldest unread edge event, waiting for one if none
// is buffered. Once the chip is removed it returns an error wrapping
// sever.ErrNoDevice (also to a reader already waiting); after Close, one
// wrapping sever.ErrClosed; ctx's error if ctx ends first.
func (r *LineRequest) ReadEvent(ctx context.Context) (LineEvent, error) {
	if !r.ref.TryGet(r) {
		return LineEvent{}, r.errClosed()
	}
	defer r.ref.Put(r)
	for {
		if err := r.h.Err(); err != nil {
			return LineEvent{}, err
		}
		seq := r.q.Seq()
		r.mu.Lock()
		if len(r.events) > 0 {
			e := r.events[0]
			r.events = r.events[1:]
			r.mu.Unlock()
			return e, nil
		}
		r.mu.Unlock()
		if _, _, err := r.q.Wait(ctx, seq); err != nil {
			if ctx.Err() != nil {
				return LineEvent{}, err
			}
			return LineEvent{}, &sever.ObjectError{Object: r.c.dev.Path(), Err: sever.ErrNoDevice}
		}
	}
}

// Poll reports, without blocking, EventIn while events are buffered and
// EventErr|EventHup once the chip is gone.
func (r *LineRequest) Poll() sever.Events {
	if !r.ref.TryGet(r) {
		return sever.EventErr | sever.EventHup
	}
	defer r.ref.Put(r)
	if ev, _ := r.q.Poll(0); ev&sever.EventHup != 0 {
		return ev
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) > 0 {
		return sever.EventIn
	}
	return 0
}

// Dropped returns how many events were dropped for a full buffer.
func (r *LineRequest) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Close frees the lines and puts the request's reference; the wait queue
// is freed once no ReadEvent is inside. It never calls into the chip. A
// second Close returns an error wrapping sever.ErrClosed.
func (r *LineRequest) Close() error {
	if err := r.h.Close(); err != nil {
		return err
	}
	r.c.mu.Lock()
	if r.c.reqs != nil {
		delete(r.c.reqs, r)
	}
	r.c.mu.Unlock()
	r.c.unclaim(r.offsets)
	r.q.Sever() // wake readers so they let go of the queue
	r.ref.Put(nil)
	return nil
}

func (r *LineRequest) errClosed() error {
	return &sever.ObjectError{Object: r.c.dev.Path() + ": line request", Err: sever.ErrClosed}
}
