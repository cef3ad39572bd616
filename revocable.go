package sever

import (
	"context"
	"sync"
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
// Revocable is built on Active, with its costs: an Access is two atomic
// adds on the caller's CPU shard.
type Revocable[T any] struct {
	a       *Active
	v       T // written only by Revoke, after the drain
	release func(T)
	once    sync.Once
}

// NewRevocable publishes v under name. release, which may be nil, runs
// exactly once with v after the first Revoke that sees the drain complete;
// it is the provider's code and runs on that Revoke's goroutine.
func NewRevocable[T any](name string, v T, release func(T), opts ...Option) *Revocable[T] {
	return &Revocable[T]{a: NewActive(name, opts...), v: v, release: release}
}

// Access calls fn with the value unless the value has been revoked, in which
// case it returns an error wrapping ErrNoDevice without calling fn. fn must
// not keep the value, or anything reached through it, after it returns.
// Revoke from inside fn deadlocks until its context is done.
func (r *Revocable[T]) Access(fn func(T) error) error {
	t, ok := r.a.Enter()
	if !ok {
		return r.a.gone
	}
	defer r.a.Exit(&t)
	return fn(r.v)
}

// Revoke refuses every new Access, waits for the running ones, then drops
// the value and runs the release function, once across all calls. If ctx is
// done first it returns the drain's *HoldersError and the value stays
// allocated until a later Revoke completes; new Accesses fail either way.
func (r *Revocable[T]) Revoke(ctx context.Context) error {
	if err := r.a.Sever(ctx); err != nil {
		return err
	}
	r.once.Do(func() {
		v := r.v
		var zero T
		r.v = zero
		if r.release != nil {
			r.release(v)
		}
	})
	return nil
}

// Revoked returns a channel closed when revocation begins.
func (r *Revocable[T]) Revoked() <-chan struct{} { return r.a.Severed() }

// Err returns nil before revocation and an error wrapping ErrNoDevice after
// it has begun.
func (r *Revocable[T]) Err() error { return r.a.Err() }
