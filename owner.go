package sever

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sever-dev/sever/check"
)

// Owner is the lifetime of code: a module whose functions back drivers,
// attributes and deferred work. Go cannot unmap code, so an Owner models
// the module lifetime the kernel has (DESIGN.md, "Owners"): while anyone
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
// attribute and the exit function cannot deadlock them (DESIGN.md, "Seed
// 001"): by the time exit takes the lock, no attribute can be inside.
//
// Nothing that merely holds memory pins an owner: a severed device's
// mapped memory is a Region, the framework's, which calls no code of the
// owner's and so keeps no pin. Once Unload has begun it always completes;
// a caller whose context ends first gets an error wrapping
// ErrUnloadInBackground and the rest runs in the background (see Unload).
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
	hooked  chan struct{} // closed when the unloading caller has run the hooks once
	life    *Lifeline     // nil unless observed (WithObserver) or traced
}

// ErrUnloadInBackground says that an Unload's context ended after the
// unload had begun, and that the unload goes on without the caller: its
// remaining drains finish, its exit runs, and Gone is closed, in the
// background. Its errno is EINPROGRESS. An error wrapping it also wraps
// the context's error.
var ErrUnloadInBackground error = &errnoError{syscall.EINPROGRESS, "unload continues in the background"}

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
	// of DESIGN.md's "Seed 001", which userspace cannot turn into a hang.
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
// function runs; the owner is gone and Unload returns nil. A hook error
// that is not a context error (an audit's finding after a complete
// removal) is returned once the unload has completed.
//
// An unload never strands the owner half-gone. If ctx is done before
// Unload begins, it returns ctx's error and the owner stays live, changed
// in nothing. Once it has begun — the owner is going, its users are being
// severed — it always completes: if ctx ends first (a hook's drain
// returned a context error, or pins are still held), Unload returns a
// *HoldersError wrapping both ctx's error and ErrUnloadInBackground, with
// the pins still held (and their holders, with tracking), and the unload
// goes on in the background: the hooks whose drains did not finish run
// again without ctx's deadline, the remaining pins are waited for, the
// exit function runs and Gone is closed. Only calls in flight can delay
// it; if one never returns, the background unload never finishes, which
// a check.Log given WithLog reports at quiesce as check.GoroutineLeft. A
// finding of a hook re-run in the background is returned to nobody.
//
// Unload while another Unload is running the hooks returns an error
// wrapping ErrBusy (a hook that unloads its own owner cannot wait for
// itself). Afterwards, a second Unload joins the first: it returns nil when
// the owner is gone, or the in-background error if its own ctx ends
// first. Unload of a gone owner returns an error wrapping ErrNotExist.
func (o *Owner) Unload(ctx context.Context, p Policy) error {
	for {
		w := o.word.Load()
		switch OwnerState(w & ownerStateMask) {
		case OwnerGone:
			return &ObjectError{Object: o.name, Err: fmt.Errorf("already unloaded: %w", ErrNotExist)}
		case OwnerGoing:
			return o.join(ctx)
		}
		if p == UnloadTry && w != int64(OwnerLive) {
			return &ObjectError{Object: o.name, Err: fmt.Errorf("%d users: %w", w/ownerPin, ErrBusy)}
		}
		if err := ctx.Err(); err != nil {
			return &ObjectError{Object: o.name, Err: fmt.Errorf("unload not begun, still live: %w", err)}
		}
		if o.word.CompareAndSwap(w, w|int64(OwnerGoing)) {
			o.life.Emit(Event{Kind: EventSevering, State: "going", N: int(w / ownerPin), Detail: "unload " + p.String()})
			if w == int64(OwnerLive) {
				o.markIdle()
			}
			return o.finish(ctx)
		}
	}
}

// join is a second Unload of a going owner: it waits for the first.
func (o *Owner) join(ctx context.Context) error {
	select {
	case <-o.hooked:
	default:
		return &ObjectError{Object: o.name, Err: fmt.Errorf("unload in progress: %w", ErrBusy)}
	}
	select {
	case <-o.goneCh:
		return nil
	case <-ctx.Done():
		return o.inBackground(ctx.Err())
	}
}

// finish is the rest of the Unload that moved the owner to going: sever
// (the hooks), drain (the pins), exit — or hand what is left of it to the
// background if ctx ends first.
func (o *Owner) finish(ctx context.Context) error {
	o.mu.Lock()
	hooks := o.hooks
	o.hooks = nil
	o.mu.Unlock()
	var unfinished []*unloadHook // hooks whose drain ctx cut short, newest first
	var finding, cause error
	for i := len(hooks) - 1; i >= 0; i-- {
		err := hooks[i].fn(ctx)
		switch {
		case err == nil:
		case isContextErr(err):
			unfinished = append(unfinished, hooks[i])
			if cause == nil {
				cause = err
			}
		case finding == nil:
			finding = fmt.Errorf("%s: unload hook %s: %w", o.name, hooks[i].name, err)
		}
	}
	close(o.hooked)
	endDrain := o.life.StartRegion("unload drain")
	defer endDrain()
	if len(unfinished) == 0 {
		select {
		case <-o.idle:
			o.exitAndGo()
			return finding
		case <-ctx.Done():
			cause = ctx.Err()
		}
	}
	if ctx.Err() != nil {
		cause = ctx.Err()
	}
	bg := context.WithoutCancel(ctx)
	o.log.Go(o.name+": unload continuing in the background", func() {
		for _, h := range unfinished {
			// No caller is left to return a finding to: the owner's
			// lifeline keeps it, for timelines and traces.
			if err := h.fn(bg); err != nil {
				o.life.Emit(Event{Kind: EventNote, Detail: "unload hook " + h.name + " (in the background): " + err.Error()})
			}
		}
		<-o.idle
		o.exitAndGo()
	})
	return o.inBackground(cause)
}

// inBackground is the error of an Unload whose caller stops waiting.
func (o *Owner) inBackground(cause error) error {
	return &HoldersError{
		Object:  o.name,
		Err:     fmt.Errorf("%w; %w", cause, ErrUnloadInBackground),
		Held:    o.Pins(),
		Holders: o.tr.holders(),
	}
}

// exitAndGo runs the exit function and makes the owner gone. Only the
// unloading caller (or its background continuation) calls it, once every
// pin is put.
func (o *Owner) exitAndGo() {
	for !o.word.CompareAndSwap(int64(OwnerGoing), int64(OwnerGone)) {
		// A Get after the last pin was put (by a caller that "knew" the
		// owner was not gone): wait for that pin too.
		o.mu.Lock()
		o.idle, o.idleSet = make(chan struct{}), false
		idle := o.idle
		o.mu.Unlock()
		if o.word.Load() == int64(OwnerGoing) {
			o.markIdle()
		}
		<-idle
	}
	if o.exit != nil {
		o.exit()
	}
	close(o.goneCh)
	o.life.Emit(Event{Kind: EventFreed, State: "gone", Detail: "exit ran"})
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
