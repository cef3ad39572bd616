package device

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"sync"

	"github.com/sever-dev/sever"
)

// Action is what a uevent announces.
type Action int

const (
	ActionAdd    Action = iota + 1 // a device was registered
	ActionRemove                   // a device was unregistered
	ActionBind                     // a driver bound to a device
	ActionUnbind                   // a driver unbound from a device
	ActionChange                   // something about a device changed
)

var actionNames = [...]string{ActionAdd: "add", ActionRemove: "remove", ActionBind: "bind", ActionUnbind: "unbind", ActionChange: "change"}

func (a Action) String() string {
	if a > 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Uevent is one event of the machine's uevent stream.
type Uevent struct {
	Seq       uint64 // SEQNUM: strictly increasing, machine-wide
	Action    Action
	Path      string            // DEVPATH
	Subsystem string            // the bus's or class's name, or ""
	Env       map[string]string // every variable, ACTION/DEVPATH/SEQNUM included
	// Missed is how many events this subscriber lost, for lack of buffer
	// space, just before this one: the Seq gap, stated.
	Missed uint64
}

func (e Uevent) String() string {
	s := fmt.Sprintf("%d %s %s", e.Seq, e.Action, e.Path)
	if e.Missed > 0 {
		s += fmt.Sprintf(" (after %d missed)", e.Missed)
	}
	return s
}

// eventStream delivers uevents in sequence order to every subscriber. It
// never blocks an emitter: a subscriber whose buffer is full loses the
// event and is told so with the next one it gets.
type eventStream struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*Subscription]struct{}
}

func newEventStream() *eventStream {
	return &eventStream{subs: make(map[*Subscription]struct{})}
}

// uevent emits action for d, with extra variables.
func (c *Core) uevent(d *Device, action Action, extra map[string]string) {
	env := map[string]string{"ACTION": action.String(), "DEVPATH": d.path}
	sub := ""
	switch {
	case d.bus != nil:
		sub = d.bus.cfg.Name
		if d.bus.cfg.Uevent != nil {
			d.bus.cfg.Uevent(d, env)
		}
	case d.class != nil:
		sub = d.class.name
		if d.class.uevent != nil {
			d.class.uevent(d, env)
		}
	}
	if sub != "" {
		env["SUBSYSTEM"] = sub
	}
	if drv := d.Driver(); drv != nil {
		env["DRIVER"] = drv.Name
	}
	maps.Copy(env, extra)
	c.events.emit(Uevent{Action: action, Path: d.path, Subsystem: sub, Env: env})
}

// Notify emits a "change" uevent for d with extra variables, as writing
// "change" to its uevent file does.
func (d *Device) Notify(extra map[string]string) {
	d.core.uevent(d, ActionChange, extra)
}

func (s *eventStream) emit(e Uevent) {
	s.mu.Lock()
	defer s.mu.Unlock() // held across delivery: subscribers see Seq order
	s.seq++
	e.Seq = s.seq
	e.Env["SEQNUM"] = strconv.FormatUint(e.Seq, 10)
	for sub := range s.subs {
		sub.push(e)
	}
}

// Subscription is one listener on the uevent stream (a netlink socket)
// with a bounded buffer. Emitters never wait for it: when its buffer is
// full, new events are dropped and counted, and the next event it
// receives carries the count in Missed.
type Subscription struct {
	s *eventStream

	mu     sync.Mutex
	buf    []Uevent // ring
	head   int
	n      int
	gap    uint64 // events dropped since the last one buffered
	missed uint64 // total dropped
	wake   chan struct{}
	closed bool
}

// Subscribe returns a subscription receiving every uevent emitted from now
// on, buffering at most size (at least 1) undelivered events.
func (c *Core) Subscribe(size int) *Subscription {
	size = max(size, 1)
	sub := &Subscription{s: c.events, buf: make([]Uevent, size), wake: make(chan struct{}, 1)}
	c.events.mu.Lock()
	c.events.subs[sub] = struct{}{}
	c.events.mu.Unlock()
	return sub
}

func (sub *Subscription) push(e Uevent) {
	sub.mu.Lock()
	if sub.n == len(sub.buf) {
		sub.gap++
		sub.missed++
		sub.mu.Unlock()
		return
	}
	e.Missed, sub.gap = sub.gap, 0
	sub.buf[(sub.head+sub.n)%len(sub.buf)] = e
	sub.n++
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// TryNext returns the oldest buffered event without blocking.
func (sub *Subscription) TryNext() (Uevent, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.n == 0 {
		return Uevent{}, false
	}
	e := sub.buf[sub.head]
	sub.buf[sub.head] = Uevent{}
	sub.head = (sub.head + 1) % len(sub.buf)
	sub.n--
	return e, true
}

// Next returns the oldest buffered event, waiting for one if none is. It
// returns ctx's error if ctx ends first, and an error wrapping
// sever.ErrClosed after Close.
func (sub *Subscription) Next(ctx context.Context) (Uevent, error) {
	for {
		if e, ok := sub.TryNext(); ok {
			return e, nil
		}
		sub.mu.Lock()
		closed := sub.closed
		sub.mu.Unlock()
		if closed {
			return Uevent{}, &sever.ObjectError{Object: "device: uevent subscription", Err: sever.ErrClosed}
		}
		select {
		case <-sub.wake:
		case <-ctx.Done():
			return Uevent{}, ctx.Err()
		}
	}
}

// Missed returns how many events the subscription has lost in all.
func (sub *Subscription) Missed() uint64 {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.missed
}

// Close stops delivery; buffered events can still be read, then Next
// returns an error wrapping sever.ErrClosed. A second Close does nothing.
func (sub *Subscription) Close() {
	sub.s.mu.Lock()
	delete(sub.s.subs, sub)
	sub.s.mu.Unlock()
	sub.mu.Lock()
	sub.closed = true
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}
