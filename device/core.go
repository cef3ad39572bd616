package device

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// Core is one simulated machine's driver core: its buses, classes, root
// devices, device links, uevent stream, attribute tree and violation log.
// Nothing in this package is global; two Cores run side by side in one
// process and never see each other's devices.
//
// A Core is safe for concurrent use.
type Core struct {
	name string
	log  *check.Log
	opts []sever.Option // passed to every primitive the core creates
	sys  *sysfs         // the device tree in kernfs

	events *eventStream

	mu       sync.Mutex
	buses    map[string]*Bus
	classes  map[string]*Class
	roots    siblings // oldest first
	locals   map[any]any
	deferred map[*Device]*Driver // devices whose probe waits for a supplier

	links linkTable
}

// NewCore returns an empty machine named name that reports contract
// violations into log (nil: a violation panics, as in package sever). opts
// are passed to every sever primitive the core creates; sever.WithTracking
// makes reference audits name their holders and the stacks that took them.
// sever.WithLog(log) is added for you.
//
// The watchdog is on: a removal the core makes (a file's, a char device's,
// a provider's) that has waited DefaultWatchdog for calls still in flight
// writes one line to os.Stderr, once per waiting removal, naming the
// object, the number of calls inside and — with sever.WithTracking — the
// stacks that entered; the removal goes on waiting. Pass
// sever.WithWatchdog among opts to change the delay or where the line goes,
// or sever.WithWatchdog(d, nil) to silence it.
//
// NewCore is where a driver core starts on its own; a whole simulated
// machine, with modules, a trace and a quiesce audit, starts at sim.New,
// which makes its Core.
func NewCore(name string, log *check.Log, opts ...sever.Option) *Core {
	c := &Core{
		name: name,
		log:  log,
		opts: append(append([]sever.Option{sever.WithWatchdog(DefaultWatchdog, stderrLine)}, opts...),
			sever.WithLog(log)),
		buses:    make(map[string]*Bus),
		classes:  make(map[string]*Class),
		locals:   make(map[any]any),
		deferred: make(map[*Device]*Driver),
	}
	c.events = newEventStream()
	c.sys = newSysfs(c)
	return c
}

// DefaultWatchdog is how long a removal made by a Core waits for calls in
// flight before its watchdog reports it (see NewCore).
const DefaultWatchdog = 5 * time.Second

// stderrLine is the default watchdog's report.
func stderrLine(line string) { fmt.Fprintln(os.Stderr, line) }

// Name returns the machine's name.
func (c *Core) Name() string { return c.name }

// Log returns the violation log given to NewCore.
func (c *Core) Log() *check.Log { return c.log }

// Options returns the sever options the core gives its primitives, for
// subsystems that create their own.
func (c *Core) Options() []sever.Option { return append([]sever.Option(nil), c.opts...) }

// Local returns the machine-local value stored under key, creating it with
// mk on first use. Subsystems keep their per-machine state here (the IRQ
// number space, the I2C adapter table) instead of in package variables. key
// must be comparable; use an unexported type to avoid collisions. mk runs
// without the core's lock (it may register classes and buses); if two
// callers race, one value wins and both get it.
func Local[T any](c *Core, key any, mk func() T) T {
	c.mu.Lock()
	v, ok := c.locals[key]
	c.mu.Unlock()
	if ok {
		return v.(T)
	}
	nv := mk()
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.locals[key]; ok {
		return v.(T)
	}
	c.locals[key] = nv
	return nv
}

// Roots returns the devices registered without a parent, oldest first.
func (c *Core) Roots() []*Device {
	c.mu.Lock()
	defer c.mu.Unlock()
	return deviceSlice(&c.roots.list)
}

// Shutdown unregisters every root device, newest first, through the one
// removal path, and returns the first error. It is the end of a machine's
// life in tests and demos.
func (c *Core) Shutdown(ctx context.Context) error {
	var first error
	for {
		c.mu.Lock()
		d := c.roots.list.Back() // the newest, without copying the list each round
		c.mu.Unlock()
		if d == nil {
			return first
		}
		if err := d.Unregister(ctx); err != nil && first == nil {
			first = err
		}
		c.mu.Lock()
		c.roots.remove(d) // make progress even if it failed
		c.mu.Unlock()
	}
}

// call runs fn, provider code of owner o at site for object, the way every
// driver callback the core makes is run: through the protocol's one fault
// policy and owner check (sever.InvokeHeld — the binding holds o's pin
// across its Probe, Remove and managed releases, also while o unloads). It
// returns fn's error; an error wrapping ErrNoDevice, without calling fn,
// if the owner is gone (recorded as check.CallIntoGoneOwner); an error
// wrapping ErrIO if fn panicked (recorded as check.DriverFault).
func (c *Core) call(o *sever.Owner, object, site string, fn func() error) error {
	return sever.InvokeHeld(c.log, o, object+": "+site, fn)
}
