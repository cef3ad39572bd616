package sever

import (
	"context"
	"fmt"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/sever-dev/sever/check"
)

// Events is a poll readiness mask. The bits have Linux's poll values, so
// they pass unchanged to a FUSE poll reply.
type Events uint32

const (
	EventIn  Events = 0x01 // readable (POLLIN)
	EventPri Events = 0x02 // priority: a sysfs attribute changed (POLLPRI)
	EventOut Events = 0x04 // writable (POLLOUT)
	EventErr Events = 0x08 // error: the provider is gone (POLLERR)
	EventHup Events = 0x10 // hang-up: the provider is gone (POLLHUP)
)

const eventBits = 5

func (e Events) String() string {
	if e == 0 {
		return "0"
	}
	names := [eventBits]string{"IN", "PRI", "OUT", "ERR", "HUP"}
	var parts []string
	for i, n := range names {
		if e&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if rest := e &^ (1<<eventBits - 1); rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, "|")
}

// WaitQueue is where pollers and blocking readers wait for a provider's
// events. It belongs to the framework's shell — an open file, a line
// request — never to the provider, and it stays valid for as long as the
// shell does, whatever the provider has freed. That is the fix seed 002
// arrived at: a provider that owns and frees the queue its pollers sleep on
// cannot be made safe, so the queue is not the provider's to free.
//
// Waiting is edge-based. Every Notify advances a sequence number; a waiter
// passes the sequence it last saw and learns which events were notified
// after it:
//
//	seq := q.Seq()              // when the file is opened or read
//	...
//	ev, seq, err := q.Wait(ctx, seq) // blocks until a Notify after seq
//
// A waker that must act at the moment of the event itself — send a FUSE
// poll wakeup — registers OnChange instead of parking a goroutine in Wait:
// its callback runs on the notifier's goroutine.
//
// Sever is the provider going away: every waiter wakes with EventErr|
// EventHup and ErrNoDevice, and every later Poll and Wait reports the same
// at once. Free marks the end of the queue's own life, at the shell's last
// reference; using a freed queue is a check.UseAfterFree.
//
//	live ──Sever──▶ severed ──Free──▶ freed
//	  └──────────────Free──────────────┘
//
// The zero WaitQueue is live and ready to use. A WaitQueue is safe for
// concurrent use.
type WaitQueue struct {
	mu       sync.Mutex
	name     string
	log      *check.Log
	seq      uint64            // sequence of the last Notify
	last     [eventBits]uint64 // per event bit, the seq of the last Notify carrying it
	changed  chan struct{}     // closed and replaced by each Notify; nil until wanted
	onChange []*wakeFn         // OnChange callbacks for the next Notify or Sever
	waiters  int
	severed  bool
	freed    bool      // Free has run
	freedAt  []uintptr // where Free ran, with tracking; formatted only for a report
	tracking bool
	life     *Lifeline // nil unless observed (WithObserver) or traced
}

// NewWaitQueue returns a live queue named name. Options: WithLog reports use
// after Free into a log instead of panicking.
func NewWaitQueue(name string, opts ...Option) *WaitQueue {
	o := buildOptions(opts)
	return &WaitQueue{name: name, log: o.log, tracking: o.tracking, life: o.lifeline("waitqueue", name, "live")}
}

// Notify wakes every waiter and every channel from Changed, runs every
// OnChange callback, and records ev as notified at a new sequence number.
// Notify after Sever does nothing.
func (q *WaitQueue) Notify(ev Events) {
	runWakeFns(q.notify(ev))
}

// notify is Notify without running the callbacks: it returns them, for the
// caller to run once it holds no lock (Scope.Notify runs them after its
// own).
func (q *WaitQueue) notify(ev Events) []*wakeFn {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.use("Notify")
	if q.severed {
		return nil
	}
	q.seq++
	for ev != 0 {
		i := bits.TrailingZeros32(uint32(ev))
		if i >= eventBits {
			break
		}
		q.last[i] = q.seq
		ev &^= 1 << i
	}
	return q.wakeLocked()
}

// Seq returns the sequence number of the last Notify.
func (q *WaitQueue) Seq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.use("Seq")
	return q.seq
}

// Poll returns, without blocking, the events notified after since, and the
// current sequence. After Sever it returns EventErr|EventHup.
func (q *WaitQueue) Poll(since uint64) (Events, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.use("Poll")
	return q.pollLocked(since), q.seq
}

func (q *WaitQueue) pollLocked(since uint64) Events {
	if q.severed {
		return EventErr | EventHup
	}
	var ev Events
	for i, s := range q.last {
		if s > since {
			ev |= 1 << i
		}
	}
	return ev
}

// Wait blocks until an event is notified after since, the queue is severed,
// or ctx is done. It returns the events and the sequence to pass next time;
// after Sever it returns EventErr|EventHup and an error wrapping
// ErrNoDevice; if ctx is done first, ctx's error.
func (q *WaitQueue) Wait(ctx context.Context, since uint64) (Events, uint64, error) {
	q.mu.Lock()
	q.use("Wait")
	q.waiters++
	defer func() {
		// Leaving the queue touches it, as poll_freewait does: a queue
		// freed under a sleeping waiter is caught here.
		q.use("Wait (leaving the queue)")
		q.waiters--
		q.mu.Unlock()
	}()
	for {
		if ev := q.pollLocked(since); ev != 0 {
			if q.severed {
				return ev, q.seq, &ObjectError{Object: q.displayName(), Err: ErrNoDevice}
			}
			return ev, q.seq, nil
		}
		ch := q.changedLocked()
		q.mu.Unlock()
		select {
		case <-ch:
			q.mu.Lock()
		case <-ctx.Done():
			q.mu.Lock()
			return 0, since, ctx.Err()
		}
	}
}

// Changed returns a channel that is closed by the next Notify or Sever (at
// once if already severed). To wait without missing an event, take the
// channel first, then Poll, then receive.
func (q *WaitQueue) Changed() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.use("Changed")
	return q.changedLocked()
}

func (q *WaitQueue) changedLocked() chan struct{} {
	if q.changed == nil {
		q.changed = make(chan struct{})
		if q.severed {
			close(q.changed)
		}
	}
	return q.changed
}

// wakeLocked closes the Changed channel and takes the OnChange callbacks,
// which the caller runs after unlocking q.mu.
func (q *WaitQueue) wakeLocked() []*wakeFn {
	if q.changed != nil {
		close(q.changed)
		q.changed = nil
	}
	fns := q.onChange
	if fns == nil {
		return nil
	}
	q.onChange = nil
	for _, w := range fns {
		w.pending = false // taken: its cancel reports false from now on
	}
	return fns
}

// wakeFn is one OnChange registration on q. pending, guarded by q.mu, is
// true until it is taken to run or cancelled.
type wakeFn struct {
	q       *WaitQueue
	fn      func()
	pending bool
}

func runWakeFns(fns []*wakeFn) {
	for _, w := range fns {
		w.fn()
	}
}

// OnChange registers fn to run once: on the goroutine of the next Notify
// or Sever (or Free), after the queue's lock is released, or at once, on
// this goroutine, if the queue is already severed. It is the callback form
// of Changed, as epoll hooks a callback into a kernel wait queue: a waker
// that must act at the moment of the event (send a FUSE poll wakeup) does
// so on the notifier's goroutine instead of waking a goroutine parked in
// Wait to do it.
//
// To wait without missing an event, register first, then Poll: a Notify
// between the two runs fn. The returned cancel removes the registration
// and reports whether fn had not run and now never will; false means fn
// has run or is running (cancel does not wait for it). Calling cancel more
// than once is harmless.
//
// fn is framework code, never provider code. It runs on whatever goroutine
// notifies — provider code holding its own locks, a removal holding the
// removal path's — so it must not block and must take only leaf locks. It
// runs after the queue's lock is released, so it may call back into the
// queue (Poll, Seq, OnChange, Changed; dropping the last reference that
// frees it). A panic in fn is the notifier's.
func (q *WaitQueue) OnChange(fn func()) (cancel func() bool) {
	if fn == nil {
		panic("sever: WaitQueue.OnChange with a nil function")
	}
	w := &wakeFn{q: q, fn: fn}
	q.mu.Lock()
	q.use("OnChange")
	if q.severed {
		q.mu.Unlock()
		fn()
		return w.cancel
	}
	w.pending = true
	q.onChange = append(q.onChange, w)
	q.mu.Unlock()
	return w.cancel
}

func (w *wakeFn) cancel() bool {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.pending {
		return false
	}
	w.pending = false
	i := slices.Index(q.onChange, w)
	q.onChange = slices.Delete(q.onChange, i, i+1)
	return true
}

// Sever marks the provider gone: it wakes every waiter with
// EventErr|EventHup and runs every OnChange callback, and every later Poll
// and Wait returns the same at once. Sever is idempotent.
func (q *WaitQueue) Sever() {
	runWakeFns(q.sever())
}

func (q *WaitQueue) sever() []*wakeFn {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.use("Sever")
	if q.severed {
		return nil
	}
	q.severed = true
	fns := q.wakeLocked()
	q.life.Emit(Event{Kind: EventSevered, State: "severed", N: q.waiters, Detail: "pollers woken with ERR|HUP"})
	return fns
}

// Waiters returns the number of goroutines blocked in Wait now. It is for
// reports and tests.
func (q *WaitQueue) Waiters() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiters
}

// Severed reports whether Sever has been called.
func (q *WaitQueue) Severed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.severed
}

// Free ends the queue's life. Only the owner of the queue's memory — the
// framework, at the last put of the shell that embeds it — may call it.
// Freeing a queue with waiters still asleep in it, or using it afterwards,
// is a check.UseAfterFree (recorded in the log, or a panic without one),
// reported with the stack that freed it when the queue was made with
// WithTracking. Free severs the queue first, so a
// waiter that was asleep wakes instead of hanging, and an OnChange callback
// still registered runs.
func (q *WaitQueue) Free() {
	runWakeFns(q.free())
}

func (q *WaitQueue) free() []*wakeFn {
	// Free runs at every close of a file: formatting a stack here cost a
	// sixth of a FUSE server's time (issue 13), and even recording the
	// program counters a tenth. Only tracking records where (formatted for
	// a report alone); without it a report gives the stack of the misuse.
	var pcs [16]uintptr
	n := 0
	if q.tracking {
		n = runtime.Callers(3, pcs[:]) // Free's caller
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.freed {
		q.report(check.ReleaseTwice, "freed twice", check.Stack(2), check.FormatStack(q.freedAt))
		return nil
	}
	if q.waiters > 0 {
		st := check.Stack(2)
		q.report(check.UseAfterFree, fmt.Sprintf("freed with %d waiters still queued", q.waiters), st, st)
	}
	q.severed = true
	fns := q.wakeLocked()
	q.freed = true
	if n > 0 {
		q.freedAt = append([]uintptr(nil), pcs[:n]...)
	}
	q.life.Emit(Event{Kind: EventFreed, State: "freed"})
	return fns
}

// use records a use of a freed queue. q.mu is held.
func (q *WaitQueue) use(op string) {
	if q.freed {
		q.report(check.UseAfterFree, op+" after Free", check.Stack(2), check.FormatStack(q.freedAt))
	}
}

func (q *WaitQueue) report(c check.Class, detail, stack, cause string) {
	v := check.Violation{Class: c, Object: q.displayName(), Detail: detail, Stack: stack, Cause: cause}
	if q.log == nil {
		panic("sever: contract violation: " + v.String() + "\nfreed at:\n" + cause)
	}
	// Record calls observers; none may call back into q, so holding q.mu
	// is safe.
	q.log.Record(v)
}

func (q *WaitQueue) displayName() string {
	if q.name == "" {
		return "waitqueue"
	}
	return q.name
}
