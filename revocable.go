package sever

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Revocable is a value a provider publishes to consumers for as long as it
// exists — a register window, a driver's private data, a client handle.
// Consumers reach it only through Access, whose callback cannot outlive the
// revocation: Revoke waits for every running callback before it drops the
// value, so a callback never sees a value that has been released.
//
//	// provider
//	regs := sever.NewRevocable("cp2112/regs", hw, nil)
//	...
//	regs.Revoke(ctx) // after this, nothing reaches hw through regs
//
//	// consumer
//	err := regs.Access(func(hw *Hardware) error { return hw.Write(0x10, v) })
//	// errors.Is(err, sever.ErrNoDevice) once revoked
//
// A Revocable may be embedded in the provider's own struct (the kernel's
// embedded revocable) and published there with Init; NewRevocable is Init
// of a new one. The zero Revocable holds no value: Access fails with
// ErrNoDevice and Revoke does nothing until Init.
//
// States, those of its Scope:
//
//	live ──Revoke or RevokeAsync──▶ severing ──last Access left──▶ severed (value released)
//
// Revocable is a Scope with one value: Access is the scope's Call, with its
// costs (two atomic adds on the caller's CPU shard, and a pin of the
// owner's word when it has an owner) and its fault policy (a panic in fn is
// recovered and returned as an error wrapping ErrIO).
type Revocable[T any] struct {
	s       *Scope
	site    string // "<name>: Access"
	v       T      // dropped by the release step, after the drain
	release func(T)
	begun   atomic.Bool // a Revoke or RevokeAsync has begun the revocation
}

// NewRevocable publishes v under name. release, which may be nil, runs
// exactly once with v after the revocation's drain; it is the provider's
// code and runs on the goroutine of the Revoke that completes the drain.
func NewRevocable[T any](name string, v T, release func(T), opts ...Option) *Revocable[T] {
	r := new(Revocable[T])
	r.Init(name, v, release, opts...)
	return r
}

// Init publishes v under name in a Revocable embedded in the provider's
// own struct, as NewRevocable does for a new one. It must be called before
// the Revocable is shared, and once: Init of a Revocable already
// initialized panics and leaves it as it was.
func (r *Revocable[T]) Init(name string, v T, release func(T), opts ...Option) {
	r.init(name, nil, false, v, release, opts)
}

// InitOwned is Init for a value whose methods are owner's code: every
// Access pins owner for its call, and is refused (recorded as a call into
// a gone owner if it is gone) while owner is not live.
func (r *Revocable[T]) InitOwned(name string, owner *Owner, v T, release func(T), opts ...Option) {
	r.init(name, owner, false, v, release, opts)
}

// InitHeld is InitOwned for a caller that holds a pin on owner until the
// Revocable's Revoke has returned (a driver binding, for what its Probe
// publishes): Accesses are refused while owner is not live, but take no
// pin of their own (see Scope.HoldsOwner).
func (r *Revocable[T]) InitHeld(name string, owner *Owner, v T, release func(T), opts ...Option) {
	r.init(name, owner, true, v, release, opts)
}

func (r *Revocable[T]) init(name string, owner *Owner, held bool, v T, release func(T), opts []Option) {
	if r.s != nil {
		panic(fmt.Sprintf("sever: Revocable %q: Init of a Revocable already initialized (as %q)", name, r.s.name))
	}
	s := NewScope(name, owner, opts...)
	if held {
		s.HoldsOwner()
	}
	r.site = name + ": Access"
	r.v = v
	r.release = release
	s.OnSever(r.drop)
	r.s = s
}

// drop is the release step: the drain is complete, no Access can see the
// value any more.
func (r *Revocable[T]) drop() {
	v := r.v
	var zero T
	r.v = zero
	if rel := r.release; rel != nil {
		r.release = nil
		_ = r.s.InvokeHeld(nil, r.s.name+": release", func() error { rel(v); return nil })
	}
}

// Name returns the name given to Init, or "" before it.
func (r *Revocable[T]) Name() string {
	if r.s == nil {
		return ""
	}
	return r.s.name
}

// Access calls fn with the value unless the value has been revoked, in which
// case it returns an error wrapping ErrNoDevice without calling fn. fn must
// not keep the value, or anything reached through it, after it returns. A
// panic in fn is recovered: Access returns an error wrapping ErrIO (and
// records check.DriverFault given WithLog). Revoke from inside fn waits for
// fn until its context is done.
func (r *Revocable[T]) Access(fn func(T) error) error {
	s := r.s
	if s == nil {
		return &ObjectError{Object: "revocable", Err: ErrNoDevice}
	}
	return s.call(s.owner, r.site, func() error { return fn(r.v) })
}

// Revoke refuses every new Access, waits for the running ones, then drops
// the value and runs the release function, once across all calls. revoked
// reports whether this call began the revocation: of concurrent Revokes
// (and RevokeAsyncs) exactly one did — Rust's revoke() -> bool. If ctx is
// done first Revoke returns the drain's *HoldersError; the value stays
// until a later Revoke completes, and new Accesses fail either way. On a
// zero Revocable it returns (false, nil).
func (r *Revocable[T]) Revoke(ctx context.Context) (revoked bool, err error) {
	if r.s == nil {
		return false, nil
	}
	revoked = !r.begun.Swap(true)
	return revoked, r.s.Sever(ctx)
}

// RevokeAsync begins the revocation and returns at once: new Accesses fail
// from now on, and the value is released, by framework code on a goroutine
// of its own, when the last running Access has left. It reports whether
// this call began the revocation. Revoked and Released say when each step
// happened. With WithLog the goroutine is accounted for by check.Log's
// quiesce, which names it if an Access never leaves.
func (r *Revocable[T]) RevokeAsync() (revoked bool) {
	if r.s == nil {
		return false
	}
	revoked = !r.begun.Swap(true)
	if !revoked {
		return false
	}
	s := r.s
	s.deny()
	s.log.Go(s.name+": asynchronous revoke", func() { _ = s.Sever(context.Background()) })
	return true
}

// Revoked returns a channel closed when revocation begins.
func (r *Revocable[T]) Revoked() <-chan struct{} {
	if r.s == nil {
		return closedChan()
	}
	return r.s.Severing()
}

// Context returns a context cancelled when revocation begins, its cause
// an error wrapping ErrNoDevice (see Scope.Context): an Access that waits
// selects on its Done, so a Revoke does not wait out the wait. On a zero
// Revocable it is already cancelled.
func (r *Revocable[T]) Context() context.Context {
	if r.s == nil {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(r.Err())
		return ctx
	}
	return r.s.Context()
}

// Released returns a channel closed when the revocation is complete: no
// Access runs and the value has been released.
func (r *Revocable[T]) Released() <-chan struct{} {
	if r.s == nil {
		return closedChan()
	}
	return r.s.Severed()
}

// Err returns nil before revocation and an error wrapping ErrNoDevice after
// it has begun (and on a zero Revocable).
func (r *Revocable[T]) Err() error {
	if r.s == nil {
		return &ObjectError{Object: "revocable", Err: ErrNoDevice}
	}
	return r.s.Err()
}

// Inside returns the number of Accesses running now, for reports and tests.
func (r *Revocable[T]) Inside() int {
	if r.s == nil {
		return 0
	}
	return r.s.Inside()
}

func closedChan() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
