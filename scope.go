package sever

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/internal/ilist"
)

// Scope is the sever protocol, written once: everything a consumer can
// reach a provider's code through — an attribute, a char device, a
// provider's handles, a requested IRQ, a request queue's driver — is a
// Scope, and the packages that offer those things are built on it rather
// than on a copy of it. It plays the part gVisor's gate plays for
// enter/leave/close and context's cancelCtx plays for its children.
//
// The caller's side is Call, which runs one piece of provider code:
//
//	err := s.Call(s.Name()+": Show", func() error { return attr.Show(buf) })
//
// Call enters the scope's active reference; checks that the owner of the
// code about to run is live and pins it for the call (or refuses the call,
// recording a call into a gone owner, and never makes it); runs the code;
// recovers a panic — always, log or no log — as a check.DriverFault with
// the panicking stack, returning an error wrapping ErrIO; and exits.
//
// Consumers that hold something open — a file — get a Shell from Open: a
// framework-owned object whose per-open Release runs exactly once, at Close
// or at Sever if still open, and whose memory (its WaitQueue included) is
// freed by framework code at its last reference.
//
// The remover's side is Sever, whose steps are:
//
//	deny      no new Call, Open or child from here on; Poll reports ERR|HUP
//	          and the shells' pollers (Wait, OnChange) are woken
//	children  sever every child scope, newest first
//	drain     wait for the calls in flight — only those, never for a shell
//	          to be closed
//	release   run Release once for every shell still open, dropping its
//	          owner pin
//	wake      sever those shells' wait queues: every later Wait returns
//	          EventErr|EventHup at once
//	regions   sever the scope's regions (each freed by the framework when
//	          its last mapping and open go)
//	detach    leave the parent's list of children; run the OnSever hooks
//
// When Sever returns nil no provider code runs through the scope now or
// ever again; the provider may free its state and its owner may go.
//
// A scope registered under a parent (Adopt) is severed with it, as a
// context is cancelled with its parent: adopting under a parent that has
// begun severing severs the child at once; a severed child leaves its
// parent's list by itself; a parent severs its children newest first.
//
// States, as in the code:
//
//	live ──Sever──▶ severing ──drained, shells released──▶ severed
//
// live: Call and Open succeed while the owner is live. severing: nothing
// new enters; calls in flight finish. severed: every step has run; every
// Call and Open returns the scope's Gone error.
//
// Cost of a Call: an Enter and Exit of an Active (an atomic add each on the
// caller's CPU shard), a load of the scope's state, a pin and unpin of the
// owner (two atomic operations on the owner's word) when there is one, and
// a deferred recover. Calls through a Shell skip the pin: the open holds
// one from Open until its Release. Nothing is allocated.
type Scope struct {
	name  string
	a     Active // held by value: a scope and its calls' gate are one allocation
	owner *Owner
	held  bool // the creator pins owner while the scope can be entered: calls take no pin
	log   *check.Log
	opts  []Option
	gone  error // what Call and Open return once severing has begun

	state atomic.Uint32 // scopeLive → scopeSevering → scopeSevered

	mu      sync.Mutex
	shells  ilist.List[Shell]  // open shells whose Release the severer has not taken
	shut    bool               // the release step has taken the list: no shell joins
	kids    ilist.List[Scope]  // child scopes, oldest first
	parent  *Scope             // set by Adopt
	sib     ilist.Links[Scope] // place on parent.kids, guarded by parent.mu
	regions []*Region
	onSever []func()
	nextID  uint64

	ctx   *scopeContext // made by the first Context call; guarded by mu
	begun latch         // closed when severing begins
	sevMu sync.Mutex    // serializes the release step among severers
	done  latch         // closed when severed
}

const (
	scopeLive uint32 = iota
	scopeSevering
	scopeSevered
)

// ScopeState is a Scope's place in its lifetime.
type ScopeState uint32

// The states of a Scope, named as in its diagram.
const (
	ScopeLive     = ScopeState(scopeLive)
	ScopeSevering = ScopeState(scopeSevering)
	ScopeSevered  = ScopeState(scopeSevered)
)

func (s ScopeState) String() string {
	switch s {
	case ScopeLive:
		return "live"
	case ScopeSevering:
		return "severing"
	case ScopeSevered:
		return "severed"
	}
	return fmt.Sprintf("ScopeState(%d)", uint32(s))
}

// NewScope returns a live scope named name ("kernfs: /devices/x/value")
// whose provider code belongs to owner (nil: built-in code that is never
// unloaded). Options: WithLog records driver faults, calls into a gone
// owner, missed deadlines and Releases never run into a log (without one
// a driver fault is still recovered; see Call); WithTracking makes missed
// deadlines name their holders.
func NewScope(name string, owner *Owner, opts ...Option) *Scope {
	return NewScopeGone(name, owner, ErrNoDevice, opts...)
}

// NewScopeGone is NewScope with the error Call, Open and shell operations
// return once severing has begun: gone, wrapped in an ObjectError naming
// the scope — a uio-like device chooses ErrIO. A nil gone means
// ErrNoDevice.
func NewScopeGone(name string, owner *Owner, gone error, opts ...Option) *Scope {
	if gone == nil {
		gone = ErrNoDevice
	}
	o := buildOptions(opts)
	s := &Scope{
		name:  name,
		owner: owner,
		log:   o.log,
		opts:  opts,
		gone:  &ObjectError{Object: name, Err: gone},
	}
	s.a.init(name, &o)
	return s
}

// HoldsOwner tells the scope that its creator holds a pin on the scope's
// owner for as long as the scope can be entered — until its Sever has
// returned — as a driver binding does for the providers it creates (the
// binding's pin is dropped only after they are revoked). Calls then check
// that the owner is not gone but take no pin of their own, which saves two
// atomic operations on the owner's shared word per call. It must be called
// before the scope is shared.
func (s *Scope) HoldsOwner() { s.held = true }

// Name returns the scope's name.
func (s *Scope) Name() string { return s.name }

// Owner returns the owner of the scope's provider code, or nil.
func (s *Scope) Owner() *Owner { return s.owner }

// State returns the scope's current state.
func (s *Scope) State() ScopeState { return ScopeState(s.state.Load()) }

// Err returns nil while the scope is live, and its Gone error from the
// moment severing begins.
func (s *Scope) Err() error {
	if s.state.Load() != scopeLive {
		return s.gone
	}
	return nil
}

// Gone returns the error Call and Open return once severing has begun.
func (s *Scope) Gone() error { return s.gone }

// Severing returns a channel closed when severing begins.
func (s *Scope) Severing() <-chan struct{} { return s.begun.done() }

// Severed returns a channel closed when every step of Sever has run.
func (s *Scope) Severed() <-chan struct{} { return s.done.done() }

// Context returns a context that is cancelled when severing begins, with
// the scope's Gone error as its cause (context.Cause). Provider code that
// waits — for hardware, for a peer, for a timer — selects on its Done so
// that a removal is not held up by the wait: the drain waits for calls in
// flight, and a call that stops waiting at the sever returns at once. The
// context is made at the first call, so a scope nobody asks allocates
// none.
func (s *Scope) Context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		ctx, cancel := context.WithCancelCause(context.Background())
		s.ctx = &scopeContext{ctx: ctx, cancel: cancel}
		if s.state.Load() != scopeLive {
			cancel(s.gone) // deny ran before this call made the context
		}
	}
	return s.ctx.ctx
}

// scopeContext is a Scope's context and the function that cancels it.
type scopeContext struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Inside returns the number of calls in flight, for reports and tests.
func (s *Scope) Inside() int { return s.a.Inside() }

// Active returns the active reference the scope's calls enter. It is for
// packages that need the token form (a callback that removes its own
// scope breaks its access; see Active.Break); everyday callers use Call.
func (s *Scope) Active() *Active { return &s.a }

// Enter begins an access to the scope, as Active.Enter does, and fails
// also once severing has begun or while the scope's owner is not live (an
// unloading owner's hooks are about to sever the scope). The access is
// begun in *t (a Token is never copied: see Token); the caller runs
// provider code with Invoke while inside, and calls Exit with t.
func (s *Scope) Enter(t *Token) bool {
	var ok bool
	if *t, ok = s.a.Enter(); !ok {
		return false
	}
	if s.state.Load() != scopeLive || s.owner != nil && s.owner.State() != OwnerLive {
		s.a.Exit(t)
		return false
	}
	return true
}

// Exit ends an access begun by Enter; see Active.Exit.
func (s *Scope) Exit(t *Token) { s.a.Exit(t) }

// Call runs fn, provider code of the scope's owner named site (for
// reports), inside an access: see the type's documentation. It returns
// fn's error; the scope's Gone error, without calling fn, once severing has
// begun or when the owner is not live; an error wrapping ErrIO if fn
// panicked (recorded as check.DriverFault with the panicking stack when
// the scope has a log). fn may block; Sever waits for it. fn must not
// Sever its own scope, which would wait for it.
func (s *Scope) Call(site string, fn func() error) error {
	return s.call(s.owner, site, fn)
}

// call is Call of code of owner o.
func (s *Scope) call(o *Owner, site string, fn func() error) error {
	var t Token
	if !s.Enter(&t) {
		return s.gone
	}
	// invoke exits t, in its one deferred function: a second defer here
	// cost a frame's worth of the hot path (issue 11's HandleDo figure).
	return invoke(&s.a, s.log, s.name, o, o != s.owner || !s.held, site, fn, &t)
}

// Invoke runs fn as Call does, for a caller already inside an access it
// began with Enter: it pins the owner, recovers a panic, and returns the
// same errors. It does not enter.
func (s *Scope) Invoke(site string, fn func() error) error {
	return s.invoke(s.owner, true, site, fn)
}

// InvokeAs is Invoke for code of another owner than the scope's — a host
// template's function called from a queue whose driver is another
// module's. o is pinned for the call (nil: built-in code).
func (s *Scope) InvokeAs(o *Owner, site string, fn func() error) error {
	return s.invoke(o, true, site, fn)
}

// InvokeHeld is InvokeAs for a caller that already holds a pin on o
// taken for this call — deferred work pinned when it was scheduled, which
// must run even while o is unloading (the unload waits for that pin). It
// refuses, and records, only a call into an o that is gone.
func (s *Scope) InvokeHeld(o *Owner, site string, fn func() error) error {
	return s.invoke(o, false, site, fn)
}

// invoke is the fault policy and the owner check of the scope's calls.
func (s *Scope) invoke(o *Owner, pin bool, site string, fn func() error) error {
	return invoke(&s.a, s.log, s.name, o, pin, site, fn, nil)
}

// Invoke runs fn, code of owner o named site, outside any scope: the
// protocol's Call without the enter and exit, for the driver core's calls
// that no scope guards (a driver's Probe). o is pinned for the call and the
// call is refused while o is not live — recorded as check.CallIntoGoneOwner
// in log if o is gone; a panic in fn is recovered, recorded in log as a
// check.DriverFault with the panicking stack (log may be nil), and returned
// as an error wrapping ErrIO.
func Invoke(log *check.Log, o *Owner, site string, fn func() error) error {
	return invoke(nil, log, site, o, true, site, fn, nil)
}

// InvokeHeld is Invoke for a caller that already holds a pin on o that
// lasts across the call — a binding's, which is held while its driver's
// Remove runs during an unload. It refuses, and records, only a call into
// an o that is gone.
func InvokeHeld(log *check.Log, o *Owner, site string, fn func() error) error {
	return invoke(nil, log, site, o, false, site, fn, nil)
}

// invoke is the fault policy and the owner check, the one place either is
// written. object names the error.
//
// a is the Active the caller holds an access to while fn runs (nil: none).
// It is invoke's first argument so that a Sever of a that finds itself
// waiting on its own goroutine can see it in the traceback — a frame of
// invoke with a as its first argument (see Active.insideOwnCall) — and
// fail with ErrDeadlock instead of waiting forever. invoke is never
// inlined (it defers), and a is kept live across fn so that its spill
// slot, which the traceback prints, holds it.
//
// exit, if not nil, is the caller's access to a, which invoke ends after
// fn (or after refusing to call it): Scope's Call enters and leaves the
// exiting to invoke's one deferred function.
func invoke(a *Active, log *check.Log, object string, o *Owner, pin bool, site string, fn func() error, exit *Token) (err error) {
	pinned := false
	if o != nil {
		if pin {
			pinned = o.TryGet(&pinTag)
		}
		if pin && !pinned || !pin && o.State() == OwnerGone {
			if exit != nil {
				a.Exit(exit)
			}
			return refuse(log, object, o, site)
		}
	}
	// One deferred function does every step that must follow fn, also when
	// fn panics or exits its goroutine: recover, unpin, exit.
	defer func() {
		if p := recover(); p != nil {
			err = fault(log, site, p)
		}
		if pinned {
			o.Put(&pinTag)
		}
		if exit != nil {
			a.Exit(exit)
		}
	}()
	err = fn()
	runtime.KeepAlive(a)
	return err
}

// pinTag tags the pins Call takes for the duration of a call.
var pinTag = struct{ call string }{"a call in flight"}

// refuse reports a call the framework will not make because o is not
// live. Into a going owner it is the protocol at work (the owner's hooks
// are severing what reaches it); into a gone owner it is a contract breach,
// recorded as check.CallIntoGoneOwner.
func refuse(log *check.Log, object string, o *Owner, site string) error {
	st := o.State()
	if st == OwnerGone && log != nil {
		log.Record(check.Violation{
			Class:  check.CallIntoGoneOwner,
			Object: o.Name(),
			Detail: "call to " + site + " after unload",
			Stack:  check.Stack(2),
		})
	}
	return &ObjectError{Object: object, Err: fmt.Errorf("%s: owner %s is %v: %w", site, o.Name(), st, ErrNoDevice)}
}

// fault turns a recovered panic into a recorded check.DriverFault and an
// error wrapping ErrIO. It runs in the deferred function, before the stack
// unwinds, so the stack recorded is the panicking one.
func fault(log *check.Log, site string, p any) error {
	if log != nil {
		log.Record(check.Violation{
			Class:  check.DriverFault,
			Object: site,
			Detail: fmt.Sprint("panic: ", p),
			Stack:  check.Stack(3),
		})
	}
	return &ObjectError{Object: site, Err: fmt.Errorf("panicked: %v: %w", p, ErrIO)}
}

// AddRegion hands r to the scope: every Shell opened from now on holds r
// from its Open until it is freed, and Sever severs r (its Free runs when
// the last mapping and open are gone). Adding to a scope that has begun
// severing severs r at once and returns the Gone error.
func (s *Scope) AddRegion(r *Region) error {
	s.mu.Lock()
	if s.shut || s.state.Load() != scopeLive {
		s.mu.Unlock()
		r.life.causedBy(s.a.life, r.Sever)
		return s.gone
	}
	s.regions = append(s.regions, r)
	s.mu.Unlock()
	return nil
}

// Regions returns the scope's regions, in the order they were added.
func (s *Scope) Regions() []*Region {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Region(nil), s.regions...)
}

// OnSever registers fn to run at the end of Sever, after the release step,
// on the severing goroutine: framework code of the package built on the
// scope (unlinking a node, freeing a number), not provider code. fn must
// not block. On a scope already severed fn runs at once.
func (s *Scope) OnSever(fn func()) {
	s.mu.Lock()
	if s.state.Load() == scopeSevered {
		s.mu.Unlock()
		fn()
		return
	}
	s.onSever = append(s.onSever, fn)
	s.mu.Unlock()
}

// Adopt registers child under s: severing s severs child (children newest
// first), and a severed child leaves s's list by itself. If s has begun
// severing, Adopt severs child at once, before returning s's Gone error —
// the race "registered while the parent was severing" is handled here and
// nowhere else. A child has at most one parent: adopting a child twice
// panics.
func (s *Scope) Adopt(ctx context.Context, child *Scope) error {
	s.mu.Lock()
	if s.state.Load() != scopeLive {
		s.mu.Unlock()
		var err error
		child.a.life.causedBy(s.a.life, func() { err = child.Sever(ctx) })
		if err != nil {
			return err
		}
		return s.gone
	}
	child.mu.Lock()
	if child.parent != nil {
		child.mu.Unlock()
		s.mu.Unlock()
		panic(fmt.Sprintf("sever: Scope %q adopted twice (by %q)", child.name, s.name))
	}
	child.parent = s
	child.mu.Unlock()
	s.kids.PushBack(child, &child.sib)
	s.mu.Unlock()
	return nil
}

// Children returns the number of child scopes not yet severed.
func (s *Scope) Children() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kids.Len()
}

// unlinkChild takes c off s's list of children.
func (s *Scope) unlinkChild(c *Scope) {
	s.mu.Lock()
	s.kids.Remove(&c.sib)
	s.mu.Unlock()
}

// Sever runs the protocol's removal steps (see the type's documentation)
// and returns nil when the scope is severed: no provider code runs through
// it now or ever again. It never waits for a shell to be closed.
//
// Sever is idempotent and may be called concurrently: every call waits for
// the same drain and returns when every step has run. If ctx is done while
// calls are still in flight it returns the drain's *HoldersError wrapping
// ctx's error (recording check.SeverTimeout in the log); the scope stays
// severing and a later Sever finishes it. Calling Sever from inside a Call
// or Invoke of the scope (one of its own callbacks) is detected after a
// short grace: it returns an error wrapping ErrDeadlock naming the scope
// (see Active.Sever), the scope stays severing, and a Sever from outside
// finishes it once the callback has returned.
func (s *Scope) Sever(ctx context.Context) error {
	s.deny()
	if err := s.severChildren(ctx); err != nil { // children
		return err
	}
	if err := s.a.Sever(ctx); err != nil { // drain
		return err
	}
	s.finish() // release, wake, regions, detach
	return nil
}

// Deny is Sever's first step alone, for a package that must refuse new
// entries at once and finish the removal later (kernfs claims a subtree
// before it drains it): from now on Enter, Open and Adopt refuse, Poll
// answers EventErr|EventHup and waiters and OnChange callbacks are woken
// with it. It waits for nothing and calls no provider code; Sever does the
// rest. Deny is idempotent.
func (s *Scope) Deny() { s.deny() }

// deny is Sever's first step: from here on Enter, Open and Adopt refuse.
//
// The scope's severing is reported here, through its Active's Lifeline
// (the scope's identity in traces), rather than when the drain begins
// after the children: the scope refuses from this moment, and its sever
// must begin before the severs of the children it causes do. The
// Active's own report at the drain is then dropped as a repeat; both
// carry the calls inside as N.
func (s *Scope) deny() {
	if s.state.CompareAndSwap(scopeLive, scopeSevering) {
		s.begun.close()
		s.mu.Lock()
		if s.ctx != nil {
			s.ctx.cancel(s.gone)
		}
		s.mu.Unlock()
		if l := s.a.life; l != nil {
			l.Emit(Event{Kind: EventSevering, State: "severing", N: s.a.Inside()})
		}
		// Poll answers ERR|HUP from here on; wake the shells' waiters and
		// OnChange callbacks now, not only at the release after the drain,
		// which may be long.
		s.Notify(EventErr | EventHup)
	}
}

// severChildren severs s's children, newest first. No child joins once
// severing has begun (Adopt severs it instead), so the list only shrinks.
func (s *Scope) severChildren(ctx context.Context) error {
	for {
		s.mu.Lock()
		var c *Scope
		for x := range s.kids.Backward() { // newest first
			if x.State() != ScopeSevered { // a severed one is about to unlink itself
				c = x
				break
			}
		}
		s.mu.Unlock()
		if c == nil {
			return nil
		}
		var err error
		c.a.life.causedBy(s.a.life, func() { err = c.Sever(ctx) })
		if err != nil {
			return err
		}
		s.unlinkChild(c)
	}
}

// finish is the release step and what follows it, run once across
// severers: the drain is complete, so no Close is running a Release now or
// will, and the shells left on the list are exactly those whose Release
// nobody has claimed.
func (s *Scope) finish() {
	s.sevMu.Lock()
	defer s.sevMu.Unlock()
	if s.state.Load() == scopeSevered {
		return
	}
	s.mu.Lock()
	s.shut = true
	shells := s.shells.TakeAll()
	regions := s.regions
	parent := s.parent
	s.mu.Unlock()
	for _, sh := range shells { // release, oldest first
		sh.sever(s.a.life)
	}
	for _, r := range regions {
		r.life.causedBy(s.a.life, r.Sever)
	}
	if parent != nil {
		parent.unlinkChild(s)
	}
	s.mu.Lock()
	s.state.Store(scopeSevered)
	hooks := s.onSever // taken with the state: a later OnSever runs at once
	s.onSever = nil
	s.mu.Unlock()
	for _, fn := range hooks {
		fn()
	}
	s.done.close()
}

// Notify records ev in the wait queue of every shell open on the scope and
// wakes their waiters (see WaitQueue.Notify). It calls no provider code
// and may be called from anywhere, including a Call; it does nothing once
// the shells are released.
//
// The shells' OnChange callbacks run after s.mu is released, on this
// goroutine: the caller may hold provider locks, and the callbacks take
// only leaf locks of their own (see WaitQueue.OnChange).
func (s *Scope) Notify(ev Events) {
	var fns []*wakeFn
	s.mu.Lock()
	for sh := range s.shells.All() {
		fns = append(fns, sh.q.notify(ev)...)
	}
	s.mu.Unlock()
	runWakeFns(fns)
}

// Shells returns the number of shells whose Release has not run, for
// reports and tests.
func (s *Scope) Shells() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shells.Len()
}
