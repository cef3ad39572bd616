package sever

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
)

// Owner is the lifetime of code: a module whose functions back drivers,
// attributes and deferred work. Go cannot unmap code, so an Owner models
// the module lifetime the kernel has (rule c of seed 004): while anyone
// may still call into it, it must stay; once it is gone, nothing may.
//
// Users pin an Owner with Get or TryGet and unpin with Put: a bound device,
// an open file and a call in flight each hold a pin. Unload takes it down:
//
//	live ──Unload──▶ going ──hooks severed, pins drained, exit run──▶ gone
//
// In going, TryGet fails, so no new user appears. Unload then runs the
// hooks that later packages registered with OnUnload — kernfs removes the
// nodes the owner's code backs, the driver core unbinds the owner's drivers
// — which sever everything the owner's code is reachable from, draining
// calls in flight and running per-open releases (which drop their pins).
// Unload waits only for pins to drain, never for a user to close a handle:
// an open file's pin is dropped when its node is severed, not at close. Then
// the exit function runs and the owner is gone.
//
// Because hooks sever and drain before exit runs, a lock shared between an
// attribute and the exit function cannot deadlock them (seed 001): by the
// time exit takes the lock, no attribute can be inside.
//
// Unload's Policy decides what counts as busy: UnloadTry refuses with
// ErrBusy while any pin is held and changes nothing; UnloadForce severs
// every user first.
//
// A call the framework would make into a gone owner is recorded as a
// check.CallIntoGoneOwner and not made (see Call).
type Owner struct {
	name string
	log  *check.Log
	tr   *tracker
	exit func()

	// word packs the state (low 2 bits) with the pin count (the rest), so
	// TryGet and UnloadTry's "no pins and live" test are each one atomic
	// step: no pin can slip in between the check and the state change.
	word atomic.Int64

	mu      sync.Mutex
	hooks   []*unloadHook // run newest first
	nextID  uint64
	idle    chan struct{} // closed when going and the last pin is put
	goneCh  chan struct{} // closed when gone
	idleSet bool
	hooked  chan struct{} // closed when the unload hooks have run
	life    *Lifeline     // nil unless observed (WithObserver) or traced
}

// OwnerState is an Owner's place in its lifetime.
type OwnerState int

const (
	OwnerLive  OwnerState = iota // code present; TryGet succeeds
	OwnerGoing                   // unloading: TryGet fails; in-flight users drain
	OwnerGone                    // exit has run; nothing may call in
)

func (s OwnerState) String() string {
	switch s {
	case OwnerLive:
		return "live"
	case OwnerGoing:
		return "going"
	case OwnerGone:
		return "gone"
	}
	return fmt.Sprintf("OwnerState(%d)", int(s))
}

// Policy says how Unload treats an owner that still has users.
type Policy int

const (
	// UnloadTry refuses with ErrBusy while any pin is held (a bound device,
	// an open file, a call in flight) and changes nothing: the "try" method
	// of seed 001, which userspace cannot turn into a hang.
	UnloadTry Policy = iota
	// UnloadForce severs everything the owner backs — unbinding its
	// drivers' devices, severing its nodes and their open files — and then
	// unloads. It waits for calls in flight, never for handles to close.
	UnloadForce
)

func (p Policy) String() string {
	switch p {
	case UnloadTry:
		return "try"
	case UnloadForce:
		return "force"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

const (
	ownerStateMask = 3
	ownerPin       = 4
)

type unloadHook struct {
	id   uint64
	name string
	fn   func(context.Context) error
}

// NewOwner returns a live Owner named name (a module name: "scsi_mod").
// exit, which may be nil, is the owner's exit function: it runs once, at the
// end of a successful Unload, after every hook has severed and every pin has
// been put.
func NewOwner(name string, exit func(), opts ...Option) *Owner {
	o := buildOptions(opts)
	return &Owner{
		name:   name,
		log:    o.log,
		tr:     newTracker(o.tracking),
		exit:   exit,
		idle:   make(chan struct{}),
		goneCh: make(chan struct{}),
		hooked: make(chan struct{}),
		life:   o.lifeline("owner", name, "live"),
	}
}

// Name returns the owner's name.
func (o *Owner) Name() string { return o.name }

// State returns the owner's current state.
func (o *Owner) State() OwnerState { return OwnerState(o.word.Load() & ownerStateMask) }

// Pins returns the number of pins held (a module's refcnt).
func (o *Owner) Pins() int { return int(o.word.Load() / ownerPin) }

// Gone returns a channel closed when the owner is gone.
func (o *Owner) Gone() <-chan struct{} { return o.goneCh }

// Get pins the owner under tag. It is for callers that already hold a pin
// or otherwise know the owner is not gone (__module_get); Get on a gone
// owner panics. Prefer TryGet.
func (o *Owner) Get(tag any) {
	if o.tr != nil {
		o.tr.add(tag, tag, 1)
	}
	if OwnerState(o.word.Add(ownerPin)&ownerStateMask) == OwnerGone {
		panic(fmt.Sprintf("sever: Owner %q: Get after unload", o.name))
	}
}

// TryGet pins the owner under tag if it is live and reports whether it did.
// It fails from the moment Unload begins.
func (o *Owner) TryGet(tag any) bool {
	for {
		w := o.word.Load()
		if OwnerState(w&ownerStateMask) != OwnerLive {
			return false
		}
		if o.word.CompareAndSwap(w, w+ownerPin) {
			if o.tr != nil {
				o.tr.add(tag, tag, 1)
			}
			return true
		}
	}
}

// Put drops a pin taken under tag. A Put with no pin held panics; with
// tracking, so does a Put whose tag holds none.
func (o *Owner) Put(tag any) {
	if o.tr != nil && !o.tr.remove(tag) {
		panic(fmt.Sprintf("sever: Owner %q: Put(%v) without a matching Get", o.name, tag))
	}
	w := o.word.Add(-ownerPin)
	if w < 0 {
		panic(fmt.Sprintf("sever: Owner %q: Put without a pin", o.name))
	}
	if w == int64(OwnerGoing) { // going, and that was the last pin
		o.markIdle()
	}
}

func (o *Owner) markIdle() {
	o.mu.Lock()
	if !o.idleSet {
		o.idleSet = true
		close(o.idle)
	}
	o.mu.Unlock()
}

// Holders lists the pins held, oldest first; empty unless the owner was made
// WithTracking.
func (o *Owner) Holders() []Holder { return o.tr.holders() }

// OnUnload registers fn to run when the owner unloads, before its exit
// function: it must sever whatever it registered the hook for (remove the
// nodes, unbind the devices) and drop the pins those held. Hooks run newest
// first, on the unloading goroutine, with Unload's context. The returned
// function unregisters the hook (for things removed before unload); calling
// it again does nothing. Registering on an owner that is not live returns
// an error wrapping ErrNoDevice and does not register.
func (o *Owner) OnUnload(name string, fn func(context.Context) error) (cancel func(), err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.State() != OwnerLive {
		return func() {}, &ObjectError{Object: o.name, Err: ErrNoDevice}
	}
	o.nextID++
	h := &unloadHook{id: o.nextID, name: name, fn: fn}
	o.hooks = append(o.hooks, h)
	return func() { o.removeHook(h.id) }, nil
}

func (o *Owner) removeHook(id uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, h := range o.hooks {
		if h.id == id {
			o.hooks = append(o.hooks[:i], o.hooks[i+1:]...)
			return
		}
	}
}

// Unload takes the owner down under policy p. With UnloadTry it returns an
// error wrapping ErrBusy, and changes nothing, while any pin is held. Then:
// TryGet starts failing; every OnUnload hook runs, newest first; Unload
// waits for the remaining pins (calls in flight) to be put; the exit
// function runs; the owner is gone and Unload returns nil.
//
// If ctx is done while pins remain, Unload returns a *HoldersError wrapping
// ctx's error (recording check.SeverTimeout) and the owner stays going: it
// can never be pinned again, and a later Unload resumes the wait. A hook
// error wrapping a context error (its drain did not finish) is returned
// after the remaining hooks have run, with the owner left going; any other
// hook error (an audit's finding after a complete removal) is returned after
// the unload has completed. Unload while another Unload is running its hooks returns an error
// wrapping ErrBusy; Unload of a gone owner, one wrapping ErrNotExist.
func (o *Owner) Unload(ctx context.Context, p Policy) error {
	for {
		w := o.word.Load()
		switch OwnerState(w & ownerStateMask) {
		case OwnerGone:
			return &ObjectError{Object: o.name, Err: fmt.Errorf("already unloaded: %w", ErrNotExist)}
		case OwnerGoing:
			return o.finish(ctx, false)
		}
		if p == UnloadTry && w != int64(OwnerLive) {
			return &ObjectError{Object: o.name, Err: fmt.Errorf("%d users: %w", w/ownerPin, ErrBusy)}
		}
		if o.word.CompareAndSwap(w, w|int64(OwnerGoing)) {
			o.life.Emit(Event{Kind: EventSevering, State: "going", N: int(w / ownerPin), Detail: "unload " + p.String()})
			if w == int64(OwnerLive) {
				o.markIdle()
			}
			return o.finish(ctx, true)
		}
	}
}

// finish runs the hooks (if first), drains pins and runs exit.
func (o *Owner) finish(ctx context.Context, first bool) error {
	var hookErr error
	if !first {
		select {
		case <-o.hooked:
		default:
			return &ObjectError{Object: o.name, Err: fmt.Errorf("unload in progress: %w", ErrBusy)}
		}
	}
	if first {
		o.mu.Lock()
		hooks := o.hooks
		o.hooks = nil
		o.mu.Unlock()
		for i := len(hooks) - 1; i >= 0; i-- {
			if err := hooks[i].fn(ctx); err != nil && hookErr == nil {
				hookErr = fmt.Errorf("%s: unload hook %s: %w", o.name, hooks[i].name, err)
			}
		}
		close(o.hooked)
		// A hook that could not finish severing (its drain missed the
		// deadline) means the owner's code may still be running: stay
		// going. Any other hook error — an audit's finding after a
		// complete removal — is returned after the unload completes.
		if hookErr != nil && isContextErr(hookErr) {
			return hookErr
		}
	}
	endDrain := o.life.StartRegion("unload drain")
	defer endDrain()
	select {
	case <-o.idle:
	case <-ctx.Done():
		err := &HoldersError{Object: o.name, Err: ctx.Err(), Held: o.Pins(), Holders: o.tr.holders()}
		if o.log != nil {
			o.log.Record(check.Violation{
				Class:   check.SeverTimeout,
				Object:  o.name,
				Detail:  fmt.Sprintf("unload: %d pins still held: %v", err.Held, ctx.Err()),
				Holders: holderStrings(err.Holders),
			})
		}
		return err
	}
	// Only one caller may run exit: the one that moves going→gone.
	if !o.word.CompareAndSwap(int64(OwnerGoing), int64(OwnerGone)) {
		<-o.goneCh
		return nil
	}
	if o.exit != nil {
		o.exit()
	}
	close(o.goneCh)
	o.life.Emit(Event{Kind: EventFreed, State: "gone", Detail: "exit ran"})
	return hookErr
}

// Call runs fn, the owner's code at site (a function name, for reports),
// unless the owner is gone, in which case it records check.CallIntoGoneOwner
// (or panics without a log) and does not call fn. It reports whether fn
// ran. Call does not pin: it is the checker's instrument for the simulated
// text pages of a module, and the framework must still hold a pin across
// any call it makes.
func (o *Owner) Call(site string, fn func()) bool {
	if o.State() == OwnerGone {
		v := check.Violation{Class: check.CallIntoGoneOwner, Object: o.name, Detail: "call to " + site + " after unload"}
		if o.log == nil {
			panic("sever: contract violation: " + v.String())
		}
		v.Stack = check.Stack(1)
		o.log.Record(v)
		return false
	}
	fn()
	return true
}
