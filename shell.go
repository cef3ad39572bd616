package sever

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/internal/ilist"
	"github.com/sever-dev/sever/internal/mutation"
)

// Shell is one open of a Scope — an open file of an attribute or a char
// device — as the framework owns it. Its per-open Release is provider code
// and runs exactly once: at Close, or at the scope's Sever if the shell is
// still open then. Its memory, the WaitQueue its pollers sleep on
// included, is the framework's and is freed by framework code at its last
// reference, whatever the provider has freed by then.
//
//	open ──scope severed──▶ severed ──Close──▶ closed ──last reference──▶ freed
//	  └───────────────────────Close───────────────▲
//
// open: operations enter the scope and call the provider. severed: the
// scope's Sever ran Release; every operation returns the scope's Gone
// error, Poll and Wait report EventErr|EventHup. closed: Close ran Release
// if the Sever had not; every operation returns an error wrapping
// ErrClosed. freed: the last reference (Close's, the scope's list's, a
// Wait in progress) is put; the wait queue is freed and the shell's holds
// on the scope's regions dropped. No provider code runs at free.
//
// The shell pins the scope's owner from Open until its Release has run, so
// calls through it (Call, Invoke) need no pin of their own.
//
// A Shell is safe for concurrent use; a package built on it adds its own
// per-open serialization (kernfs serializes the operations of one file,
// chardev lets them run concurrently) and calls Close under it.
type Shell struct {
	s       *Scope
	what    string // "open 3"
	q       *WaitQueue
	ref     *Ref
	pending *check.Pending // the Release, run at Close or Sever
	closing *check.Pending // the consumer's Close: never closing is a leak
	release func()
	regions []*Region

	state atomic.Uint32 // shellOpen → shellSevered → shellClosed → shellFreed

	onScope ilist.Links[Shell] // place on the scope's open list, guarded by s.mu
}

const (
	shellOpen uint32 = iota
	shellSevered
	shellClosed
	shellFreed
)

// Tags of the references on a shell's Ref besides its creator's (nil, put
// by Close).
type shellTag string

const (
	tagShellList shellTag = "scope's open list"
	tagShellWait shellTag = "Wait"
)

// Open opens a shell on the scope. open, which may be nil, is the
// provider's per-open code (site "<scope>: Open"); release, which may be
// nil, its per-open Release (site "<scope>: Release"), run exactly once as
// the Shell's documentation says. Both run through the protocol's fault
// policy: a panic in open fails the Open with an error wrapping ErrIO, a
// panic in release is recorded and the release counts as run.
//
// A successful Open pins the scope's owner until the Release has run,
// holds each of the scope's regions until the shell is freed, and, with a
// log, registers the Release and the consumer's Close as check.Pendings:
// at quiesce a Release that never ran, or a shell never closed — a leaked
// open, even one the Sever released — is check.ReleaseNeverRun naming the
// stack that opened it. Open fails with the scope's Gone
// error once severing has begun or while the owner is not live, with the
// error of a region that is severed, and with open's error; then nothing
// is held and release is never called.
func (s *Scope) Open(open func() error, release func()) (*Shell, error) {
	var t Token
	if !s.Enter(&t) {
		return nil, s.gone
	}
	defer s.a.Exit(&t)
	sh := &Shell{s: s, release: release}
	o := s.owner
	if o != nil && !o.TryGet(sh) {
		return nil, s.gone
	}
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	sh.regions = s.regions // append-only; this prefix never changes
	s.mu.Unlock()
	held := 0
	undo := func() {
		for _, r := range sh.regions[:held] {
			r.Put()
		}
		if o != nil {
			o.Put(sh)
		}
	}
	for _, r := range sh.regions {
		if err := r.Get(); err != nil {
			undo()
			return nil, &ObjectError{Object: s.name, Err: err}
		}
		held++
	}
	if open != nil {
		if err := s.invoke(o, false, s.name+": Open", open); err != nil {
			undo()
			return nil, err
		}
	}
	sh.what = "open " + strconv.FormatUint(id, 10)
	sh.q = NewWaitQueue(s.name+": "+sh.what, s.opts...)
	sh.ref = NewRef(s.name+": "+sh.what, sh.free, s.opts...)
	sh.pending = s.log.Expect(s.name, "Release of "+sh.what)
	sh.closing = s.log.Expect(s.name, "Close of "+sh.what+" by its consumer (the open leaked)")
	sh.ref.Get(tagShellList)
	s.mu.Lock()
	s.shells.PushBack(sh, &sh.onScope) // inside the access: the severer has not taken the list
	s.mu.Unlock()
	return sh, nil
}

// Scope returns the scope the shell was opened on.
func (sh *Shell) Scope() *Scope { return sh.s }

// Name returns the shell's name: its scope's and "open N".
func (sh *Shell) Name() string { return sh.s.name + ": " + sh.what }

// Closed reports whether Close has been called.
func (sh *Shell) Closed() bool { return sh.state.Load() >= shellClosed }

// Released reports whether the scope's Sever ran the shell's Release
// (severed) or Close did (closed).
func (sh *Shell) Released() bool { return sh.state.Load() != shellOpen }

// ErrClosed returns the error operations on the shell return after Close:
// one naming the scope and wrapping ErrClosed.
func (sh *Shell) ErrClosed() error { return &ObjectError{Object: sh.s.name, Err: ErrClosed} }

// Enter begins an operation through the shell: it fails with ErrClosed
// after Close and with the scope's Gone error once the scope is severing
// (see Scope.Enter). The caller runs provider code with Invoke and ends
// the operation with Exit. The operation is begun in *t.
func (sh *Shell) Enter(t *Token) error {
	if sh.state.Load() >= shellClosed {
		return sh.ErrClosed()
	}
	if !sh.s.Enter(t) {
		return sh.s.gone
	}
	return nil
}

// Exit ends an operation begun by Enter.
func (sh *Shell) Exit(t *Token) { sh.s.a.Exit(t) }

// Invoke runs fn, provider code named site, for an operation inside
// Enter: as Scope.Invoke, but without a pin of its own (the open holds
// one).
func (sh *Shell) Invoke(site string, fn func() error) error {
	// The owner was found live by Enter and is pinned by the open: no
	// check is left to make.
	return sh.s.invoke(nil, false, site, fn)
}

// Call is Enter, Invoke and Exit.
func (sh *Shell) Call(site string, fn func() error) error {
	var t Token
	if err := sh.Enter(&t); err != nil {
		return err
	}
	defer sh.s.a.Exit(&t)
	return sh.s.invoke(nil, false, site, fn) // as Invoke
}

// Seq returns the sequence of the last Notify of the shell's wait queue.
// The caller must keep the shell from being freed meanwhile: call it inside
// an operation (between Enter and Exit), or between Hold and Unhold.
func (sh *Shell) Seq() uint64 { return sh.q.Seq() }

// Hold takes a reference that keeps the shell's memory — its wait queue —
// alive until Unhold, for a caller that sleeps on it across operations (a
// blocking read's retry loop). It fails, taking nothing, once the shell is
// closed.
func (sh *Shell) Hold() bool {
	if sh.state.Load() >= shellClosed {
		return false
	}
	return sh.ref.TryGet(tagShellWait)
}

// Unhold drops the reference Hold took.
func (sh *Shell) Unhold() { sh.ref.Put(tagShellWait) }

// Notify notifies this shell's wait queue only (Scope.Notify notifies
// every shell).
func (sh *Shell) Notify(ev Events) { sh.q.Notify(ev) }

// OnChange registers fn to run once, on the goroutine of the shell's next
// Notify (this shell's or the scope's), of the scope's severing (when Poll
// starts reporting EventErr|EventHup) or of Close — or at once, on this
// goroutine, if the shell is already closed. To miss nothing, register
// first, then Poll, as with Wait. cancel removes the registration and
// reports whether fn had not run and now never will. Until fn has run or
// cancel has removed it, the registration holds a reference that keeps the
// shell's wait queue alive, as a Wait in progress does.
//
// fn is framework code: it runs on the notifier's goroutine, which may hold
// provider locks or the removal path's, so it must not block and may take
// only leaf locks (see WaitQueue.OnChange).
func (sh *Shell) OnChange(fn func()) (cancel func() bool) {
	if fn == nil {
		panic("sever: Shell.OnChange with a nil function")
	}
	if sh.state.Load() >= shellClosed || !sh.ref.TryGet(tagShellWait) {
		fn()
		return func() bool { return false }
	}
	// Exactly one of the two puts runs: the queue takes the registration
	// to run it, or cancel removes it.
	c := sh.q.OnChange(func() {
		fn()
		sh.ref.Put(tagShellWait)
	})
	return func() bool {
		if c() {
			sh.ref.Put(tagShellWait)
			return true
		}
		return false
	}
}

// Poll reports, without blocking, the events notified after since: 0 and
// an error wrapping ErrClosed after Close; EventErr|EventHup and the Gone
// error once the scope is severing. It calls no provider code.
func (sh *Shell) Poll(since uint64) (Events, error) {
	if sh.state.Load() >= shellClosed {
		return 0, sh.ErrClosed()
	}
	if sh.s.state.Load() != scopeLive {
		return EventErr | EventHup, sh.s.gone
	}
	if !sh.ref.TryGet(tagShellWait) {
		return 0, sh.ErrClosed()
	}
	defer sh.ref.Put(tagShellWait)
	ev, _ := sh.q.Poll(since)
	if ev&EventHup != 0 {
		if sh.state.Load() >= shellClosed {
			return 0, sh.ErrClosed()
		}
		return ev, sh.s.gone
	}
	return ev, nil
}

// Wait blocks until an event is notified after since, the scope is severed
// (EventErr|EventHup and the Gone error), the shell is closed (0 and an
// error wrapping ErrClosed) or ctx is done (0 and ctx's error). It returns
// the sequence to pass next time. The queue it sleeps on is the shell's
// own, kept alive by a reference Wait holds while it sleeps.
func (sh *Shell) Wait(ctx context.Context, since uint64) (Events, uint64, error) {
	if sh.state.Load() >= shellClosed || !sh.ref.TryGet(tagShellWait) {
		return 0, since, sh.ErrClosed()
	}
	defer sh.ref.Put(tagShellWait)
	if sh.s.state.Load() != scopeLive {
		return EventErr | EventHup, since, sh.s.gone
	}
	ev, seq, err := sh.q.Wait(ctx, since)
	switch {
	case sh.state.Load() >= shellClosed:
		return 0, seq, sh.ErrClosed()
	case err != nil && errors.Is(err, ErrNoDevice):
		return ev, seq, sh.s.gone
	case err == nil && sh.s.state.Load() != scopeLive:
		// Woken by the scope's severing (Scope.deny), before the queue
		// itself is severed after the drain.
		return EventErr | EventHup, seq, sh.s.gone
	}
	return ev, seq, err
}

// Close closes the shell. If the scope is not severing, Close runs the
// Release on this goroutine inside an access, so a Sever draining the
// scope waits for it; otherwise the Sever runs (or ran) it and Close calls
// no provider code. Either way Close wakes the shell's waiters (they
// return ErrClosed) and puts its reference; the shell is freed at the last
// one, here or later. A second Close returns an error wrapping ErrClosed.
func (sh *Shell) Close() error {
	for {
		st := sh.state.Load()
		if st >= shellClosed {
			return sh.ErrClosed()
		}
		if sh.state.CompareAndSwap(st, shellClosed) {
			break
		}
	}
	sh.closing.Done()
	sh.q.Sever() // wake this shell's waiters; they see closed
	s := sh.s
	if t, ok := s.a.Enter(); ok {
		// Inside the access, so a Sever's drain waits for this Release.
		// If the Enter fails, the Sever holds the list's reference and
		// runs the Release after its drain.
		s.mu.Lock()
		mine := s.shells.Remove(&sh.onScope)
		s.mu.Unlock()
		if mine {
			sh.runRelease()
		}
		s.a.Exit(&t)
		if mine {
			sh.ref.Put(tagShellList)
		}
	}
	sh.ref.Put(nil)
	return nil
}

// sever is the release step of the scope's Sever for a shell still on its
// list: Release, wake, and the list's reference. The wait queue's hang-up,
// and the shell's free if this put is its last, are reported as caused by
// cause, the lifeline of the severing scope.
func (sh *Shell) sever(cause *Lifeline) {
	sh.runRelease()
	sh.state.CompareAndSwap(shellOpen, shellSevered)
	if mutation.FreeWaitQueueEarly { // a planted bug: see package internal/mutation
		sh.q.Free()
	}
	sh.q.life.causedBy(cause, func() {
		sh.q.Sever()
		sh.ref.life.causedBy(cause, func() {
			sh.ref.Put(tagShellList) // the shell, and its queue, may be freed here
		})
	})
}

// runRelease runs the provider's Release — its caller took the shell off
// the scope's list, which happens once — and drops the open's owner pin.
func (sh *Shell) runRelease() {
	s := sh.s
	if rel := sh.release; rel != nil {
		site := s.name + ": Release"
		call := func() error { rel(); return nil }
		_ = s.invoke(s.owner, false, site, call)
		if mutation.ReleaseTwice { // a planted bug: see package internal/mutation
			_ = s.invoke(s.owner, false, site, call)
		}
	}
	sh.pending.Done()
	if s.owner != nil {
		s.owner.Put(sh)
	}
}

// free runs at the last reference: framework-owned memory only.
func (sh *Shell) free() {
	sh.state.Store(shellFreed)
	sh.q.Free()
	for _, r := range sh.regions {
		r.Put()
	}
}
