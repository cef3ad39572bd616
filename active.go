package sever

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

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
// Each access has its own slot, and its Token names that slot and the
// slot's generation; accessors share nothing but their CPU's cache line of
// slots, so one stuck accessor cannot hold a Sever for another's sake (the
// failure that got the kernel's 2025 revocable reverted, where all readers
// shared an SRCU index). Callers may block inside an access; Sever simply
// waits longer.
//
// States, as in the code:
//
//	live ──Sever──▶ severing ──last exit──▶ severed
//
// In live, Enter succeeds. From the first Sever call on, Enter fails and
// Severed is closed. When the last access that entered in live has exited,
// the state is severed and every Sever call returns nil.
//
// An Active must be made by NewActive. A zero Active, or a nil *Active, is
// not one: every method but Name panics on it with a sentence saying so
// (there is no lazy set-up to race with, and the fast paths stay one test
// shorter).
//
// Cost: Enter is one compare-and-swap on a slot of the current CPU's shard
// and one load of the state word; Exit is one compare-and-swap and one load.
// Each is one call, with its slow paths out of line: Go cannot inline
// either (Enter asks the runtime for the CPU; a call to a slow path costs
// most of the inlining budget). Do makes the same calls as Enter, fn and
// Exit. Nothing is allocated and no two CPUs write one cache line, unless
// tracking is on. BENCHMARKS.md has the figures.
//
// Misuse is detected before it changes anything, without tracking: Exit or
// Break of a zero Token, of another Active's Token, or of a Token whose
// access has already exited (Exit called twice, or called on a copy whose
// twin already exited — even while other accesses are inside) finds its
// compare-and-swap impossible and changes no count. Without WithLog it then
// panics with a sentence naming the Active and the misuse; with WithLog it
// records a check.Misuse violation and returns. Either way the Active stays
// correct: a later Sever drains exactly the accesses really inside. Token
// carries a noCopy marker, so go vet's copylocks check flags copies.
//
// Self-removal: code inside an access may sever its own Active with
// SeverSelf (or drop its protection with Break before severing something
// that contains it) without deadlock: its own access stops counting, and of
// several racing self-removers exactly one is told it won. A plain Sever
// called from inside a Do of the same Active would wait for itself; it
// notices after a short grace and returns an error wrapping ErrDeadlock.
//
// Protocol. Each step is numbered as in the Promela model
// (model/active.pml), which spin checks exhaustively; "slot" is the
// access's slot (even: free; odd: inside), "idle" reads every slot one by
// one, shards first, then spill blocks. All atomics are sequentially
// consistent.
//
//	Enter: E1 CAS slot even→odd (a free slot of this CPU's shard, else any)
//	       E2 if state != live { E3 slot += 1 (odd→even); settle; fail }
//	       (inside)
//	Exit:  X1 CAS slot t.w→t.w+1 (fails, changing nothing, for a stale Token)
//	       X2 if state != live { settle }
//	Sever: S1 CAS state live→severing (the winner closes Severed)
//	       S2 settle
//	       S3 return if state == severed, else wait until drained is closed (or ctx is done)
//	settle: T1 if state == severing && idle && CAS state severing→severed { close drained }
//
// Why no access begins after Sever returns: an access is inside only if its
// E2 saw live, so its E1 precedes S1 in the single order of atomics; any
// idle check taken after S1 therefore sees its slot odd until its X1. Why
// no wake-up is lost: the last release of a slot after S1 (an X1 or an E3)
// is followed by that goroutine's own settle, which sees every earlier
// release and so every slot even; if the last release came before S1, the
// severer's own S2 sees them all even. A spill block's first slot is
// taken by the very compare-and-swap that publishes the block, its others
// only after, so an idle check that loaded the chain before the publication
// read the block's slots as free at that moment — which they were.
type Active struct {
	state   atomic.Uint32 // activeLive → activeSevering → activeSevered
	mask    uint32        // len(shards) - 1
	shards  []shard       // one cache line of slots per CPU
	fast    []shard       // shards, or nil with tracking: the slots Exit may finish inline
	more    atomic.Pointer[spill]
	name    string
	tr      *tracker   // nil unless WithTracking
	log     *check.Log // nil: misuse panics, missed deadlines are only returned
	gone    error      // what Do returns once severed
	begun   latch      // closed at S1
	drained latch      // closed at T1
	watch   watchdog
	life    *Lifeline // nil unless observed (WithObserver) or traced
}

const (
	activeLive uint32 = iota
	activeSevering
	activeSevered
)

// selfGrace is how long a waiting Sever lets pass before it looks at its
// own goroutine's stack for a Do of the same Active: long enough that an
// ordinary drain never pays for the look, short enough that a self-deadlock
// fails within a fraction of a second.
const selfGrace = 20 * time.Millisecond

// Token is one access to an Active, returned by Enter and given back, by
// pointer, to Exit. It names the access's slot and the generation the slot
// had when the access began, so Exit can tell the Token that began an
// access from a stale copy of it. The zero Token is not an access; Exit
// panics on it (or records check.Misuse, given WithLog). Do not copy a
// Token: go vet reports copies.
type Token struct {
	_ noCopy
	s *slot  // the access's slot; nil: never an access
	w uint64 // the odd value E1 stored in *s; tokenExited, tokenBroken
}

// The even values of Token.w. Exit and Break refuse them before any
// compare-and-swap, so neither is ever tried against a slot.
const (
	tokenExited uint64 = 0 // Exit has ended the access
	tokenBroken uint64 = 2 // Break has ended the access's hold; Exit is still due
)

// noCopy makes go vet's copylocks check report copies of the struct that
// holds it (see sync.noCopy).
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// tokenKey identifies an access in the tracker.
type tokenKey struct {
	s *slot
	w uint64
}

// NewActive returns a live Active named name (the name appears in errors,
// panics and violations). Of the options it uses WithLog, WithTracking and
// WithWatchdog.
func NewActive(name string, opts ...Option) *Active {
	o := buildOptions(opts)
	a := new(Active)
	a.init(name, &o)
	return a
}

// init makes the zero Active a a live Active, as NewActive does; a Scope
// makes the Active it holds by value with it.
func (a *Active) init(name string, o *options) {
	n := shardCount()
	a.mask = uint32(n - 1)
	a.shards = make([]shard, n)
	a.name = name
	a.tr = newTracker(o.tracking)
	a.log = o.log
	a.gone = &ObjectError{Object: name, Err: ErrNoDevice}
	a.watch = watchdog{after: o.watchAfter, report: o.watch}
	a.life = o.lifeline("active", name, "live")
	if a.tr == nil {
		a.fast = a.shards
	}
}

// Name returns the name given to NewActive ("" for a zero or nil Active).
func (a *Active) Name() string {
	if a == nil {
		return ""
	}
	return a.name
}

// Enter begins an access. It returns false, and no Token, once severing has
// begun; otherwise the caller is inside until it calls Exit with the Token,
// and no Sever returns before then.
func (a *Active) Enter() (Token, bool) {
	if a == nil || len(a.shards) == 0 {
		return a.enterSlow(0) // panics, naming the misuse
	}
	var p uint32
	if a.mask != 0 { // one shard: no need to ask which CPU this is
		p = uint32(procPin()) & a.mask
		procUnpin()
	}
	s := &a.shards[p].slots[0]
	if w := s.Load(); w&1 == 0 && s.CompareAndSwap(w, w+1) { // E1
		st := a.state.Load() // E2
		if st == activeLive && a.tr == nil {
			return Token{s: s, w: w + 1}, true
		}
		return a.entered(s, w+1, st, 1)
	}
	return a.enterSlow(p)
}

// enterSlow is Enter when the first slot of this CPU's shard is taken: it
// takes any free slot (E1), scanning this shard, the others, then the
// spill blocks, and appends a block when every slot is taken.
func (a *Active) enterSlow(p uint32) (Token, bool) {
	a.mustBeMade("Enter")
	s, w := a.takeSlot(p)
	return a.entered(s, w, a.state.Load(), 2) // E2
}

// takeSlot is E1 on the first free slot found from shard p on; it returns
// the slot and the odd value it stored.
func (a *Active) takeSlot(p uint32) (*slot, uint64) {
	for k := range uint32(len(a.shards)) {
		sh := &a.shards[(p+k)&a.mask]
		for j := range sh.slots {
			if w, ok := take(&sh.slots[j]); ok {
				return &sh.slots[j], w
			}
		}
	}
	var last *spill
	for b := a.more.Load(); b != nil; b = b.next.Load() {
		for j := range b.slots {
			if w, ok := take(&b.slots[j]); ok {
				return &b.slots[j], w
			}
		}
		last = b
	}
	for {
		b := new(spill)
		b.slots[0].Store(1) // taken before the block is published
		var published bool
		if last == nil {
			published = a.more.CompareAndSwap(nil, b)
		} else {
			published = last.next.CompareAndSwap(nil, b)
		}
		if published { // E1: the block's first slot, odd from the start
			return &b.slots[0], 1
		}
		// Another Enter appended a block first: try its slots, then append
		// after it.
		if last == nil {
			last = a.more.Load()
		} else {
			last = last.next.Load()
		}
		for j := range last.slots {
			if w, ok := take(&last.slots[j]); ok {
				return &last.slots[j], w
			}
		}
	}
}

// take is E1 on slot s: if s is free it makes it odd and returns the value
// it stored.
func take(s *slot) (uint64, bool) {
	w := s.Load()
	if w&1 != 0 || !s.CompareAndSwap(w, w+1) { // E1
		return 0, false
	}
	return w + 1, true
}

// entered finishes an Enter whose E1 made slot s odd (value w) and whose E2
// loaded st: the access begins, recorded by the tracker, or it fails (E3).
// skip counts the frames between entered and Enter, for the tracker's
// stack.
func (a *Active) entered(s *slot, w uint64, st uint32, skip int) (Token, bool) {
	if st != activeLive {
		s.Add(1) // E3: odd→even; the slot is this Enter's, so no CAS is needed
		a.settle()
		if a.life != nil {
			a.life.Emit(Event{Kind: EventRefused, Detail: "Enter refused"})
		}
		return Token{}, false
	}
	if a.tr != nil {
		a.tr.enter(tokenKey{s, w}, skip+1)
	}
	return Token{s: s, w: w}, true
}

// Exit ends the access t began and marks t exited. It must be called
// exactly once per successful Enter, with a pointer to that Enter's Token —
// also after Break or SeverSelf, which mark the Token through the same
// pointer (so write defer a.Exit(&t), never defer a.Exit on a copy). Exit
// of a zero Token, of another Active's Token, or of a Token whose access
// already exited (a second Exit, or an Exit of a copy) is misuse: it
// changes nothing and panics, or records check.Misuse given WithLog.
func (a *Active) Exit(t *Token) {
	s, w := t.s, t.w
	x1 := a != nil && w&1 != 0 && within(s, a.fast) && s.CompareAndSwap(w, w+1) // X1
	if x1 && a.state.Load() == activeLive {                                     // X2
		t.w = tokenExited
		return
	}
	a.exitSlow(t, x1)
}

// exitSlow is Exit when the fast path did not finish: x1 reports whether
// its X1 succeeded (then X2 saw severing). Otherwise this is a Token of a
// spill slot, a broken Token, tracking, or misuse.
func (a *Active) exitSlow(t *Token, x1 bool) {
	if !x1 {
		a.mustBeMade("Exit")
		s, w := t.s, t.w
		switch {
		case s == nil:
			a.misuse("Exit of a Token that was never inside (the zero Token)")
			return
		case !a.issued(s):
			a.misuse("Exit of a Token it did not issue (another Active's)")
			return
		case w == tokenBroken: // Break already ended its hold
			t.w = tokenExited
			return
		case w&1 == 0 || !s.CompareAndSwap(w, w+1): // X1
			a.misuse("Exit of a Token whose access already exited (Exit called twice, or on a copy of the Token)")
			return
		}
		if a.tr != nil {
			a.tr.remove(tokenKey{s, w})
		}
		t.w = tokenExited
		if a.state.Load() == activeLive { // X2
			return
		}
	}
	t.w = tokenExited
	a.settle()
}

// issued reports whether s is one of a's slots.
func (a *Active) issued(s *slot) bool {
	if within(s, a.shards) {
		return true
	}
	for b := a.more.Load(); b != nil; b = b.next.Load() {
		if within(s, unsafe.Slice(&b.shard, 1)) {
			return true
		}
	}
	return false
}

// Break ends t's hold on a without ending the access: from Break on, a Sever
// may complete while the caller is still running. It is how code inside an
// access removes the thing it is accessing (kernfs_break_active_protection):
// the caller must not touch what the Sever protects after it severs. Exit(t)
// is still required afterwards, with the same pointer. Break of a broken
// Token, and every misuse Exit refuses, panics (or records check.Misuse
// given WithLog) without changing anything.
func (a *Active) Break(t *Token) {
	a.mustBeMade("Break")
	s, w := t.s, t.w
	switch {
	case s == nil:
		a.misuse("Break of a Token that was never inside (the zero Token)")
		return
	case !a.issued(s):
		a.misuse("Break of a Token it did not issue (another Active's)")
		return
	case w == tokenBroken:
		a.misuse("Break of a Token already broken")
		return
	case w&1 == 0 || !s.CompareAndSwap(w, w+1): // X1
		a.misuse("Break of a Token whose access already exited (Exit called before, or a copy of the Token)")
		return
	}
	if a.tr != nil {
		a.tr.remove(tokenKey{s, w})
	}
	t.w = tokenBroken                 // still a's Token, holding nothing; Exit is still due
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
// every call waits for the same drain.
//
// Calling Sever from inside an access to a would wait for itself. From
// inside a.Do it is detected: after a short grace (tens of milliseconds)
// the waiting Sever finds the Do on its own goroutine's stack and returns an
// error wrapping ErrDeadlock (syscall.EDEADLK) naming a, recording
// check.Misuse given WithLog; severing has begun all the same. The same
// holds from inside provider code run through a Scope or Shell on a
// (Scope.Call, Scope.Invoke, Shell.Invoke: a callback removing its own
// file or device): the error names a and says that the removal would wait
// for its own callback. From inside a bare Enter/Exit pair it cannot be
// told from a slow access: it waits until ctx is done, and WithWatchdog
// makes it say so. Sever from inside an
// access with SeverSelf, or after Break.
func (a *Active) Sever(ctx context.Context) error {
	_, err := a.sever(ctx)
	return err
}

// SeverSelf severs a from inside the access t: it breaks t's protection
// (see Break), severs, and waits for every other access to exit. won reports
// whether this call began the severing; of several racing self-removers (and
// plain Severs) exactly one began it. Exit(t) is still required afterwards.
// If Break refuses t as misuse (given WithLog), SeverSelf returns an error
// wrapping ErrInvalid and does not sever.
func (a *Active) SeverSelf(ctx context.Context, t *Token) (won bool, err error) {
	a.Break(t)
	if t.w != tokenBroken {
		return false, &ObjectError{Object: a.name, Err: fmt.Errorf("SeverSelf with a Token that is not inside: %w", ErrInvalid)}
	}
	return a.sever(ctx)
}

func (a *Active) sever(ctx context.Context) (won bool, err error) {
	a.mustBeMade("Sever")
	if a.life != nil && a.state.Load() == activeLive {
		// Reported before S1, so that no settle can report severed first;
		// the Lifeline drops the reports of the severers that lose.
		a.life.Emit(Event{Kind: EventSevering, State: "severing", N: a.Inside()})
	}
	if a.state.CompareAndSwap(activeLive, activeSevering) { // S1
		won = true
		a.begun.close()
	}
	a.settle() // S2
	if mutation.SkipDrain {
		return won, nil // a planted bug: see package internal/mutation
	}
	if a.state.Load() == activeSevered { // S3: drained already
		return won, nil
	}
	defer a.life.StartRegion("sever drain")()
	return won, a.wait(ctx)
}

// wait is S3 when accesses are still inside: it waits for drained or ctx,
// looks once for a self-deadlock after selfGrace, and reports once through
// the watchdog.
func (a *Active) wait(ctx context.Context) error {
	grace := time.NewTimer(selfGrace)
	defer grace.Stop()
	var bark <-chan time.Time
	if a.watch.report != nil {
		wt := time.NewTimer(a.watch.after)
		defer wt.Stop()
		bark = wt.C
	}
	start := time.Now()
	drained := a.drained.done()
	for {
		select {
		case <-drained: // S3
			return nil
		case <-ctx.Done():
			err := &HoldersError{Object: a.name, Err: ctx.Err(), Held: a.Inside(), Holders: a.tr.holders()}
			if a.log != nil {
				a.log.Record(check.Violation{
					Class:   check.SeverTimeout,
					Object:  a.name,
					Detail:  fmt.Sprintf("%d accesses still inside: %v", err.Held, ctx.Err()),
					Holders: holderStrings(err.Holders),
				})
			}
			return err
		case <-grace.C:
			if what := a.insideOwn(); what != "" {
				if a.log != nil {
					a.log.Record(check.Violation{Class: check.Misuse, Object: a.name, Detail: what, Stack: check.Stack(2)})
				}
				return &ObjectError{Object: a.name, Err: fmt.Errorf("%s: %w", what, ErrDeadlock)}
			}
		case <-bark:
			bark = nil
			a.watch.bark(a, time.Since(start))
		}
	}
}

// insideOwn reports whether the calling goroutine holds an access to a
// that this Sever would wait for: whether its stack has a frame of
// (*Active).Do with a as its receiver, or a frame of invoke (the one
// function through which Scope and Shell run provider code) with a as its
// first argument. It returns what to tell the caller, or "" if neither.
// Neither function is ever inlined (both defer), so their frames and first
// words appear in the traceback. It is called only after the grace, on a
// drain that is already waiting, so the fast paths pay nothing for it.
func (a *Active) insideOwn() string {
	buf := make([]byte, 16<<10)
	for {
		n := runtime.Stack(buf, false)
		if n < len(buf) || len(buf) >= 4<<20 {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	st := string(buf)
	if hasFrame(st, reflect.ValueOf((*Active).Do).Pointer(), a) {
		return "Sever called from inside its own Do, which would wait for itself forever; sever from outside the access, or enter with Enter and call SeverSelf"
	}
	if hasFrame(st, reflect.ValueOf(invoke).Pointer(), a) {
		return "removed from inside one of its own callbacks, which the removal would wait for forever; remove it from another goroutine, or through its package's self-removal (kernfs Call.RemoveSelf, device UnregisterSelf)"
	}
	return ""
}

// hasFrame reports whether the traceback st has a frame of the function at
// pc whose first argument word is a.
func hasFrame(st string, pc uintptr, a *Active) bool {
	needle := fmt.Sprintf("%s(%#x", runtime.FuncForPC(pc).Name(), uintptr(unsafe.Pointer(a)))
	for {
		i := strings.Index(st, needle)
		if i < 0 {
			return false
		}
		st = st[i+len(needle):]
		if st != "" && strings.IndexByte("0123456789abcdef", st[0]) < 0 {
			return true // the whole pointer, not a prefix of a longer one
		}
	}
}

// settle closes drained once severing has begun and no access is inside.
func (a *Active) settle() {
	if a.state.Load() == activeSevering && a.idle() && // T1
		a.state.CompareAndSwap(activeSevering, activeSevered) {
		a.drained.close()
		if a.life != nil {
			a.life.Emit(Event{Kind: EventSevered, State: "severed"})
			a.life.End()
		}
	}
}

// idle reports whether every slot was free when read: the shards, then the
// spill blocks, one slot at a time, stopping at the first taken one.
func (a *Active) idle() bool {
	for i := range a.shards {
		for j := range a.shards[i].slots {
			if a.shards[i].slots[j].Load()&1 != 0 {
				return false
			}
		}
	}
	for b := a.more.Load(); b != nil; b = b.next.Load() {
		for j := range b.slots {
			if b.slots[j].Load()&1 != 0 {
				return false
			}
		}
	}
	return true
}

// Do runs fn inside an access and returns its error, or returns an error
// wrapping ErrNoDevice without calling fn once severing has begun. The
// access ends when fn returns or panics. fn must not Sever a: that Sever
// fails with ErrDeadlock (see Sever).
func (a *Active) Do(fn func() error) error {
	// Enter, written out: Enter cannot be inlined (it calls the runtime for
	// the CPU), and this saves the call. Keep the two the same.
	var t Token
	if a == nil || len(a.shards) == 0 {
		a.enterSlow(0) // panics, naming the misuse
	}
	var p uint32
	if a.mask != 0 {
		p = uint32(procPin()) & a.mask
		procUnpin()
	}
	ok := true
	s := &a.shards[p].slots[0]
	if w := s.Load(); w&1 == 0 && s.CompareAndSwap(w, w+1) { // E1
		st := a.state.Load() // E2
		if st == activeLive && a.tr == nil {
			t.s, t.w = s, w+1
		} else {
			t, ok = a.entered(s, w+1, st, 1)
		}
	} else {
		t, ok = a.enterSlow(p)
	}
	if !ok {
		return a.gone
	}
	// Exit, written out: a deferred a.Exit(&t) would be two calls, the
	// compiler's wrapper and Exit. Keep the two the same.
	defer func() {
		s, w := t.s, t.w
		x1 := w&1 != 0 && within(s, a.fast) && s.CompareAndSwap(w, w+1) // X1
		if !x1 || a.state.Load() != activeLive {                        // X2
			a.exitSlow(&t, x1)
		}
	}()
	return fn()
}

// Severed returns a channel closed when severing begins: from then on no
// Enter succeeds. Accesses already inside may still be running.
func (a *Active) Severed() <-chan struct{} {
	a.mustBeMade("Severed")
	return a.begun.done()
}

// Drained returns a channel closed when severing has begun and every access
// has exited: the point after which Sever returns nil.
func (a *Active) Drained() <-chan struct{} {
	a.mustBeMade("Drained")
	return a.drained.done()
}

// Err returns nil while a is live and an error wrapping ErrNoDevice, naming
// a, once severing has begun.
func (a *Active) Err() error {
	a.mustBeMade("Err")
	if a.state.Load() == activeLive {
		return nil
	}
	return a.gone
}

// Inside returns the number of accesses inside now (read slot by slot, so
// not a snapshot while accesses come and go). It is for reports and tests.
func (a *Active) Inside() int {
	a.mustBeMade("Inside")
	n := 0
	for i := range a.shards {
		for j := range a.shards[i].slots {
			n += int(a.shards[i].slots[j].Load() & 1)
		}
	}
	for b := a.more.Load(); b != nil; b = b.next.Load() {
		for j := range b.slots {
			n += int(b.slots[j].Load() & 1)
		}
	}
	return n
}

// Holders lists the accesses inside, oldest first. It is empty unless a was
// made WithTracking.
func (a *Active) Holders() []Holder {
	a.mustBeMade("Holders")
	return a.tr.holders()
}

// misuse reports a misuse that changed nothing: into the log given WithLog,
// or as a panic.
func (a *Active) misuse(what string) {
	if a.log != nil {
		a.log.Record(check.Violation{Class: check.Misuse, Object: a.name, Detail: what, Stack: check.Stack(2)})
		return
	}
	panic(fmt.Sprintf("sever: Active %q: %s", a.name, what))
}

// mustBeMade panics, naming op, if a was not made by NewActive.
func (a *Active) mustBeMade(op string) {
	if a == nil {
		panic("sever: " + op + " on a nil *Active")
	}
	if len(a.shards) == 0 {
		panic("sever: " + op + " on a zero Active; make one with NewActive")
	}
}

// watchdog reports, once per waiting Sever, a drain that takes longer than
// after; report is nil unless WithWatchdog.
type watchdog struct {
	after  time.Duration
	report func(string)
}

func (w watchdog) bark(a *Active, waited time.Duration) {
	var b strings.Builder
	fmt.Fprintf(&b, "sever: Active %q: Sever has waited %v for %d accesses still inside", a.name, waited.Round(time.Millisecond), a.Inside())
	hs := a.tr.holders()
	if a.tr == nil {
		b.WriteString(" (WithTracking names where they were taken)")
	}
	for _, h := range hs {
		b.WriteString("\n\t" + strings.ReplaceAll(h.String(), "\n", "\n\t"))
	}
	w.report(b.String())
}
