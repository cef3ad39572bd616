package device

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// Provider publishes a device's service — a GPIO chip's lines, an I2C
// adapter's bus, an IRQ domain — to consumers as Handles (seed 000's
// provider/consumer model). A consumer holding a Handle references the
// service; it does not own it:
//
//	// provider, in Probe
//	p, err := device.NewProvider(dev, "regs", state)
//
//	// consumer
//	h, err := p.Open("my-driver")
//	err = h.Do(func(s *State) error { return s.write(0x10, v) })
//	// errors.Is(err, sever.ErrNoDevice) once the provider is gone
//	h.Close()
//
// The provider is revoked by the device's removal path (after its files,
// before the driver's Remove): new calls fail, calls in flight drain, the
// value is dropped. Handles stay valid shells: every Do returns an error
// wrapping sever.ErrNoDevice, Close still works, and removal never waits
// for a consumer to Close.
//
// A Provider is a sever.Revocable of the value (whose methods are the
// owner's code, pinned for each call), joined to the device's removal
// path; its states are the Revocable's:
//
//	live ──Revoke──▶ severing ──calls drained──▶ severed
//
// Cost of a call: the Revocable's Access — one Enter and Exit of an Active
// (two atomic adds on the caller's CPU shard), a pin and unpin of the
// owner, and a deferred recover.
type Provider[T any] struct {
	dev  *Device
	name string
	rv   sever.Revocable[T] // the value; dropped after the drain, so no shell reaches provider state

	log      *check.Log
	open     atomic.Int64
	unsever  func()
	mu       sync.Mutex
	onRevoke []func()
}

// NewProvider publishes v as a service of d named name, joining d's
// removal path at StageProviders in the current scope (see AddSeverable):
// created in Probe, it is revoked when that binding ends. Calls through its
// handles run with the owner of d's code at creation (see Device.Owner)
// pinned — by the binding, for a provider made in Probe, or by each call —
// and are refused while it is not live. On a device being removed it returns
// an error wrapping sever.ErrNoDevice.
func NewProvider[T any](d *Device, name string, v T) (*Provider[T], error) {
	obj := d.path + ": " + name
	p := &Provider[T]{dev: d, name: obj, log: d.core.log}
	owner := d.Owner()
	d.mu.Lock()
	// Made by the binding whose driver is the owner: the binding's pin
	// outlives the provider (it is dropped after StageProviders), so calls
	// need no pin of their own.
	held := d.bind != nil && d.bind.drv.Owner == owner
	d.mu.Unlock()
	if held {
		p.rv.InitHeld(obj, owner, v, nil, d.core.opts...)
	} else {
		p.rv.InitOwned(obj, owner, v, nil, d.core.opts...)
	}
	rm, err := d.AddSeverable("provider "+name, StageProviders, p.Revoke)
	if err != nil {
		return nil, err
	}
	p.mu.Lock() // Revoke may already be running (the device unplugged meanwhile)
	p.unsever = rm
	p.mu.Unlock()
	return p, nil
}

// Name returns the provider's name: its device's path and its own name.
func (p *Provider[T]) Name() string { return p.name }

// Device returns the providing device.
func (p *Provider[T]) Device() *Device { return p.dev }

// Open returns a new handle for consumer (a name, for reports). Once the
// provider is revoked it returns an error wrapping sever.ErrNoDevice. The
// consumer must Close the handle, before or after the provider is gone: a
// handle never closed when the core's log quiesces is a leak, recorded as
// check.ReleaseNeverRun with the stack that opened it.
func (p *Provider[T]) Open(consumer string) (*Handle[T], error) {
	if err := p.rv.Err(); err != nil {
		return nil, err
	}
	p.open.Add(1)
	return &Handle[T]{p: p, consumer: consumer,
		closing: p.log.Expect(p.name, "Close of the handle of "+consumer+" (the handle leaked)")}, nil
}

// OnRevoke registers fn to run once the provider is revoked and its calls
// have drained — to wake a subsystem's waiters, to turn its requests into
// shells. fn is framework code of the subsystem, run on the revoking
// goroutine; it must not block. If the provider is already revoked, fn
// runs at once.
func (p *Provider[T]) OnRevoke(fn func()) {
	p.mu.Lock()
	select {
	case <-p.rv.Released():
		p.mu.Unlock()
		fn()
		return
	default:
	}
	p.onRevoke = append(p.onRevoke, fn)
	p.mu.Unlock()
}

// Revoke refuses new calls, waits for the calls in flight and drops the
// value; then runs the OnRevoke functions. The device's removal path calls
// it; a subsystem may call it earlier (gpiochip_remove). It is idempotent:
// later calls wait for the same drain. If ctx ends first it returns the
// drain's *sever.HoldersError and a later call finishes the job.
func (p *Provider[T]) Revoke(ctx context.Context) error {
	if _, err := p.rv.Revoke(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	unsever := p.unsever
	p.unsever = nil
	fns := p.onRevoke
	p.onRevoke = nil
	p.mu.Unlock()
	if unsever != nil {
		unsever()
	}
	for _, fn := range fns {
		fn()
	}
	return nil
}

// Revoked returns a channel closed when revocation begins.
func (p *Provider[T]) Revoked() <-chan struct{} { return p.rv.Revoked() }

// Context returns a context cancelled when the provider is revoked (its
// cause wraps ErrNoDevice): provider code that waits inside a handle's Do
// — for the device's reply — selects on its Done, so an unplug or unbind
// does not wait out the wait.
func (p *Provider[T]) Context() context.Context { return p.rv.Context() }

// Err returns nil while the provider is live and an error wrapping
// sever.ErrNoDevice from the start of its revocation.
func (p *Provider[T]) Err() error { return p.rv.Err() }

// Handles returns the number of handles open now (not yet closed), shells
// included.
func (p *Provider[T]) Handles() int { return int(p.open.Load()) }

// Inside returns the number of calls in flight now.
func (p *Provider[T]) Inside() int { return p.rv.Inside() }

// Handle is a consumer's reference to a Provider's service: a shell that
// stays valid after the provider is gone. A Handle may be used from many
// goroutines at once.
//
//	open ──Close──▶ closed
//
// Independently of that, the provider may be revoked at any moment; from
// then on Do returns an error wrapping sever.ErrNoDevice.
type Handle[T any] struct {
	p        *Provider[T]
	consumer string
	closing  *check.Pending // Close: a handle never closed is a leak
	closed   atomic.Bool
}

// Do calls fn with the provider's value inside an access: the provider's
// removal waits for fn to return, and its driver's Remove runs only after.
// fn must not keep the value, or anything reached through it. Do returns
// fn's error; an error wrapping sever.ErrClosed after Close; one wrapping
// sever.ErrNoDevice, without calling fn, once the provider is revoked; one
// wrapping sever.ErrIO if fn panicked (recorded as check.DriverFault).
func (h *Handle[T]) Do(fn func(T) error) error {
	if h.closed.Load() {
		return h.errClosed()
	}
	return h.p.rv.Access(fn)
}

// Err returns the error Do would return now without calling anything:
// nil while usable.
func (h *Handle[T]) Err() error {
	if h.closed.Load() {
		return h.errClosed()
	}
	return h.p.rv.Err()
}

// Revoked returns a channel closed when the provider's revocation begins.
func (h *Handle[T]) Revoked() <-chan struct{} { return h.p.rv.Revoked() }

// Consumer returns the consumer name given to Open.
func (h *Handle[T]) Consumer() string { return h.consumer }

// Close puts the consumer's reference. It works the same before and after
// the provider is gone and never calls into the provider. The first Close
// returns nil; later ones return an error wrapping sever.ErrClosed.
func (h *Handle[T]) Close() error {
	if h.closed.Swap(true) {
		return h.errClosed()
	}
	h.p.open.Add(-1)
	h.closing.Done()
	return nil
}

func (h *Handle[T]) errClosed() error {
	return &sever.ObjectError{Object: h.p.name + " (" + h.consumer + ")", Err: sever.ErrClosed}
}
