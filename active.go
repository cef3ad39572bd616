package sever

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/internal/mutation"
)

// Active guards calls into a provider with active references, the role of
// kernfs's active count and percpu_ref_tryget_live: a caller enters before
// it touches provider code or state and exits after; the provider's remover
// severs, which refuses every new entry and waits for the entered callers —
// only them, never for handles that are merely open — to exit. After Sever
// returns the provider may free its state and its code may go.
//
// The everyday form is Do:
//
//	// consumer
//	err := a.Do(func() error { return dev.read(buf) }) // ErrNoDevice once severed
//
//	// remover
//	a.Sever(ctx) // no read runs now or ever again
//	free(dev)
//
// Enter and Exit are the token form, for accesses that span calls:
//
//	t, ok := a.Enter()
//	if !ok {
//		return ErrNoDevice
//	}
//	defer a.Exit(&t)
//
// Each access has its own Token; accessors share nothing but their CPU's
// counter shard, so one stuck accessor cannot hold a Sever for another's
// sake (the failure that got the kernel's 2025 revocable reverted, where all
// readers shared an SRCU index). Callers may block inside an access; Sever
// simply waits longer.
//
// States, as in the code:
//
//	live ──Sever──▶ severing ──last exit──▶ severed
//
// In live, Enter succeeds. From the first Sever call on, Enter fails and
// Severed is closed. When the last access that entered in live has exited,
// the state is severed and every Sever call returns nil.
//
// Cost: Enter is one atomic add on the current CPU's counter shard and one
// load of the state word; Exit is one add and one load. Nothing is
// allocated and no two CPUs write one cache line, unless tracking is on.
//
// Self-removal: code inside an access may sever its own Active with
// SeverSelf (or drop its protection with Break before severing something
// that contains it) without deadlock: its own access stops counting, and of
// several racing self-removers exactly one is told it won.
//
// Protocol. Each step is numbered as in the Promela model
// (model/active.pml), which spin checks exhaustively; "shard" is the
// caller's counter shard, "sum" reads every shard one by one. All atomics
// are sequentially consistent.
//
//	Enter: E1 shard += 1
//	       E2 if state != live { E3 shard -= 1; settle; fail }
//	       (inside)
//	Exit:  X1 shard -= 1
//	       X2 if state != live { settle }
//	Sever: S1 CAS state live→severing (the winner closes Severed)
//	       S2 settle
//	       S3 wait until drained is closed (or ctx is done)
//	settle: T1 if state == severing && sum == 0 && CAS state severing→severed { close drained }
//
// Why no access begins after Sever returns: an access is inside only if its
// E2 saw live, so its E1 precedes S1 in the single order of atomics; any sum
// taken after S1 therefore counts it until its X1. Why no wake-up is lost:
// the last decrement after S1 (an X1 or an E3) is followed by that
// goroutine's own settle, which sees every earlier decrement and so a zero
// sum; if the last decrement came before S1, the severer's own S2 sees zero.
type Active struct {
	state   atomic.Uint32 // activeLive → activeSevering → activeSevered
	mask    uint32        // len(shards) - 1
	shards  []shard       // per-CPU counts of accesses inside (plus transient E1s)
	name    string
	tr      *tracker   // nil unless WithTracking
	log     *check.Log // nil: missed deadlines are only returned
	gone    error      // what Do returns once severed
	begun   chan struct{}
	drained chan struct{}
	life    *Lifeline // nil unless observed (WithObserver) or traced
}

const (
	activeLive uint32 = iota
	activeSevering
	activeSevered
)

// Token is one access to an Active, returned by Enter and given back to
// Exit. The zero Token is not an access; Exit panics on it.
type Token struct {
	a      *Active
	id     uint64 // tracking id, 0 without tracking
	shard  uint32 // shard index + 1
	broken bool   // set by Break: the access no longer holds off Sever
}

// NewActive returns a live Active named name (the name appears in errors and
// panics).
func NewActive(name string, opts ...Option) *Active {
	o := buildOptions(opts)
	n := shardCount()
	return &Active{
		mask:    uint32(n - 1),
		shards:  make([]shard, n),
		name:    name,
		tr:      newTracker(o.tracking),
		log:     o.log,
		gone:    &ObjectError{Object: name, Err: ErrNoDevice},
		begun:   make(chan struct{}),
		drained: make(chan struct{}),
		life:    o.lifeline("active", name, "live"),
	}
}

// Name returns the name given to NewActive.
func (a *Active) Name() string { return a.name }

// Enter begins an access. It returns false, and no Token, once severing has
// begun; otherwise the caller is inside until it calls Exit with the Token,
// and no Sever returns before then.
func (a *Active) Enter() (Token, bool) {
	i := shardHint() & a.mask
	a.shards[i].n.Add(1)                             // E1
	if a.state.Load() != activeLive || a.tr != nil { // E2
		return a.enterSlow(i)
	}
	return Token{a: a, shard: i + 1}, true
}

// enterSlow finishes an Enter that found a severing (E3) or tracking.
func (a *Active) enterSlow(i uint32) (Token, bool) {
	if a.state.Load() != activeLive {
		a.shards[i].n.Add(-1) // E3
		a.settle()
		if a.life != nil {
			a.life.Emit(Event{Kind: EventRefused, Detail: "Enter refused"})
		}
		return Token{}, false
	}
	return Token{a: a, shard: i + 1, id: a.tr.enter(2)}, true
}

// Exit ends the access t began and clears t. It must be called exactly
// once per successful Enter, with a pointer to that Enter's Token — also
// after Break or SeverSelf, which mark the Token through the same pointer
// (so write defer a.Exit(&t), never defer a.Exit on a copy). A second Exit
// of the same Token panics, as does Exit of a zero Token or of another
// Active's Token.
func (a *Active) Exit(t *Token) {
	if t.a != a || t.broken || a.tr != nil {
		a.exitSlow(t)
		return
	}
	n := a.shards[t.shard-1].n.Add(-1) // X1
	*t = Token{}
	if n < 0 || a.state.Load() != activeLive { // X2
		a.exitSettle(n)
	}
}

func (a *Active) exitSlow(t *Token) {
	if t.a != a {
		if t.a == nil {
			a.misuse("Exit of a Token that is not inside (never entered, or already exited)")
		}
		a.misuse("Exit of a Token it did not issue")
	}
	tok := *t
	*t = Token{}
	if tok.broken {
		return
	}
	if !a.tr.remove(tok.id) {
		a.misuse("Exit of a Token that already exited")
	}
	a.exitSettle(a.shards[tok.shard-1].n.Add(-1)) // X1
}

// exitSettle finishes an Exit whose X1 left n on its shard.
func (a *Active) exitSettle(n int64) {
	if n < 0 {
		a.misuse("Exit without a matching Enter")
	}
	if a.state.Load() != activeLive { // X2
		a.settle()
	}
}

// Break ends t's hold on a without ending the access: from Break on, a Sever
// may complete while the caller is still running. It is how code inside an
// access removes the thing it is accessing (kernfs_break_active_protection):
// the caller must not touch what the Sever protects after it severs. Exit(t)
// is still required afterwards, with the same pointer. Break of a broken Token panics.
func (a *Active) Break(t *Token) {
	if t.a != a {
		a.misuse("Break of a Token it did not issue")
	}
	if t.broken {
		a.misuse("Break of a Token already broken")
	}
	if a.tr != nil && !a.tr.remove(t.id) {
		a.misuse("Break of a Token that already exited")
	}
	t.broken = true
	if a.shards[t.shard-1].n.Add(-1) < 0 { // X1
		a.misuse("Break without a matching Enter")
	}
	if a.state.Load() != activeLive { // X2
		a.settle()
	}
}

// Sever refuses every new Enter from its first call on and returns nil when
// every access that entered before has exited. If ctx is done first it
// returns a *HoldersError wrapping ctx's error, with the number of accesses
// still inside and, with tracking, where each was taken; it records
// check.SeverTimeout in the log given WithLog. Severing continues: a later
// Sever call waits again. Sever may be called concurrently and repeatedly;
// every call waits for the same drain. Calling Sever from inside an access
// to a deadlocks until ctx is done: use SeverSelf.
func (a *Active) Sever(ctx context.Context) error {
	_, err := a.sever(ctx)
	return err
}

// SeverSelf severs a from inside the access t: it breaks t's protection
// (see Break), severs, and waits for every other access to exit. won reports
// whether this call began the severing; of several racing self-removers (and
// plain Severs) exactly one began it. Exit(t) is still required afterwards.
func (a *Active) SeverSelf(ctx context.Context, t *Token) (won bool, err error) {
	a.Break(t)
	return a.sever(ctx)
}

func (a *Active) sever(ctx context.Context) (won bool, err error) {
	if a.life != nil && a.state.Load() == activeLive {
		// Reported before S1, so that no settle can report severed first;
		// the Lifeline drops the reports of the severers that lose.
		a.life.Emit(Event{Kind: EventSevering, State: "severing", N: int(a.sum())})
	}
	if a.state.CompareAndSwap(activeLive, activeSevering) { // S1
		won = true
		close(a.begun)
	}
	a.settle() // S2
	if mutation.SkipDrain {
		return won, nil // a planted bug: see package internal/mutation
	}
	select { // S3
	case <-a.drained:
		return won, nil
	default:
	}
	defer a.life.StartRegion("sever drain")()
	select {
	case <-a.drained:
		return won, nil
	case <-ctx.Done():
		err := &HoldersError{Object: a.name, Err: ctx.Err(), Held: int(a.sum()), Holders: a.tr.holders()}
		if a.log != nil {
			a.log.Record(check.Violation{
				Class:   check.SeverTimeout,
				Object:  a.name,
				Detail:  fmt.Sprintf("%d accesses still inside: %v", err.Held, ctx.Err()),
				Holders: holderStrings(err.Holders),
			})
		}
		return won, err
	}
}

// settle closes drained once severing has begun and no access is inside.
func (a *Active) settle() {
	if a.state.Load() == activeSevering && a.sum() == 0 && // T1
		a.state.CompareAndSwap(activeSevering, activeSevered) {
		close(a.drained)
		if a.life != nil {
			a.life.Emit(Event{Kind: EventSevered, State: "severed"})
			a.life.End()
		}
	}
}

func (a *Active) sum() int64 {
	var n int64
	for i := range a.shards {
		n += a.shards[i].n.Load()
	}
	return n
}

// Do runs fn inside an access and returns its error, or returns an error
// wrapping ErrNoDevice without calling fn once severing has begun. The
// access ends when fn returns or panics.
func (a *Active) Do(fn func() error) error {
	t, ok := a.Enter()
	if !ok {
		return a.gone
	}
	defer a.Exit(&t)
	return fn()
}

// Severed returns a channel closed when severing begins: from then on no
// Enter succeeds. Accesses already inside may still be running.
func (a *Active) Severed() <-chan struct{} { return a.begun }

// Drained returns a channel closed when severing has begun and every access
// has exited: the point after which Sever returns nil.
func (a *Active) Drained() <-chan struct{} { return a.drained }

// Err returns nil while a is live and an error wrapping ErrNoDevice, naming
// a, once severing has begun.
func (a *Active) Err() error {
	if a.state.Load() == activeLive {
		return nil
	}
	return a.gone
}

// Inside returns the number of accesses inside now. It is for reports and
// tests.
func (a *Active) Inside() int { return int(a.sum()) }

// Holders lists the accesses inside, oldest first. It is empty unless a was
// made WithTracking.
func (a *Active) Holders() []Holder { return a.tr.holders() }

func (a *Active) misuse(what string) {
	panic(fmt.Sprintf("sever: Active %q: %s", a.name, what))
}
