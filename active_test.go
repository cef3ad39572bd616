package sever_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

func TestEnterFailsOnceSeverBegins(t *testing.T) {
	a := sever.NewActive("dev")
	if _, ok := a.Enter(); !ok {
		t.Fatal("Enter on a live Active failed")
	}
	// The token above is never exited: Sever must not return, but new
	// entries must already fail.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Sever(ctx) }()
	<-a.Severed()
	if _, ok := a.Enter(); ok {
		t.Fatal("Enter succeeded after Sever began")
	}
	if err := a.Err(); !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("Err after Sever began = %v, want ENODEV", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sever with an access stuck inside returned %v, want context.Canceled", err)
	}
}

func TestSeverDrainsInFlightAccess(t *testing.T) {
	a := sever.NewActive("dev")
	tok, _ := a.Enter()
	var exited atomic.Bool
	go func() {
		time.Sleep(20 * time.Millisecond)
		exited.Store(true)
		a.Exit(&tok)
	}()
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !exited.Load() {
		t.Fatal("Sever returned while an access was still inside")
	}
	select {
	case <-a.Drained():
	default:
		t.Fatal("Drained not closed after Sever returned nil")
	}
}

func TestSeverWithNothingInFlightReturnsAtOnce(t *testing.T) {
	a := sever.NewActive("dev")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.Sever(ctx); err != nil {
		t.Fatalf("Sever of an idle Active: %v", err)
	}
	if err := a.Sever(ctx); err != nil {
		t.Fatalf("second Sever: %v", err)
	}
}

func TestSeverConcurrentCallersAllWaitForDrain(t *testing.T) {
	a := sever.NewActive("dev")
	tok, _ := a.Enter()
	var exited atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Sever(context.Background()); err != nil {
				t.Error(err)
			}
			if !exited.Load() {
				t.Error("a concurrent Sever returned before the access exited")
			}
		}()
	}
	<-a.Severed()
	time.Sleep(10 * time.Millisecond)
	exited.Store(true)
	a.Exit(&tok)
	wg.Wait()
}

func TestSeverTimeoutNamesHolders(t *testing.T) {
	var log check.Log
	a := sever.NewActive("usb1/1-1", sever.WithTracking(), sever.WithLog(&log))
	var tok sever.Token
	enterHere(t, a, &tok)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := a.Sever(ctx)
	var he *sever.HoldersError
	if !errors.As(err, &he) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sever past deadline returned %v, want *HoldersError wrapping DeadlineExceeded", err)
	}
	if he.Held != 1 || len(he.Holders) != 1 || !strings.Contains(he.Holders[0].Stack, "enterHere") {
		t.Fatalf("holders do not name where the stuck access was taken: %+v", he)
	}
	if log.Count(check.SeverTimeout) != 1 {
		t.Fatalf("log has %v, want one SeverTimeout", log.Violations())
	}
	a.Exit(&tok)
	if err := a.Sever(context.Background()); err != nil {
		t.Fatalf("a later Sever did not resume the drain: %v", err)
	}
}

func enterHere(t *testing.T, a *sever.Active, tok *sever.Token) {
	var ok bool
	if *tok, ok = a.Enter(); !ok {
		t.Fatal("Enter failed")
	}
}

func TestSeverSelfDoesNotDeadlock(t *testing.T) {
	a := sever.NewActive("zram0/reset")
	tok, _ := a.Enter()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	won, err := a.SeverSelf(ctx, &tok)
	if err != nil || !won {
		t.Fatalf("SeverSelf from inside the only access = %v, %v; want true, nil", won, err)
	}
	a.Exit(&tok)
	if _, ok := a.Enter(); ok {
		t.Fatal("Enter succeeded after SeverSelf")
	}
}

func TestSeverSelfExactlyOneWinner(t *testing.T) {
	for iter := 0; iter < 200; iter++ {
		a := sever.NewActive("scsi/delete")
		const n = 8
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n {
			tok, ok := a.Enter()
			if !ok {
				t.Fatal("Enter failed before sever")
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				won, err := a.SeverSelf(context.Background(), &tok)
				if err != nil {
					t.Error(err)
				}
				if won {
					wins.Add(1)
				}
				a.Exit(&tok)
			}()
		}
		close(start)
		wg.Wait()
		if w := wins.Load(); w != 1 {
			t.Fatalf("iteration %d: %d self-removers won, want exactly 1", iter, w)
		}
	}
}

func TestBreakLetsOuterSeverComplete(t *testing.T) {
	// An attribute removing its whole device: it breaks its own protection,
	// then severs (here: waits for someone else's Sever of its node).
	a := sever.NewActive("dev/reset")
	tok, _ := a.Enter()
	a.Break(&tok)
	if err := a.Sever(context.Background()); err != nil {
		t.Fatalf("Sever after Break did not complete: %v", err)
	}
	a.Exit(&tok) // required, and must not drive the count below zero
	if a.Inside() != 0 {
		t.Fatalf("Inside = %d after Exit of a broken token", a.Inside())
	}
}

func TestActiveMisusePanics(t *testing.T) {
	a := sever.NewActive("dev", sever.WithTracking())
	b := sever.NewActive("other")
	mustPanic(t, "Exit of zero Token", `"dev"`, func() { a.Exit(&sever.Token{}) })
	tb, _ := b.Enter()
	mustPanic(t, "Exit of another Active's Token", "did not issue", func() { a.Exit(&tb) })
	b.Exit(&tb)
	ta, _ := a.Enter()
	a.Exit(&ta)
	mustPanic(t, "double Exit with tracking", "already exited", func() { a.Exit(&ta) })
	tc, _ := a.Enter()
	a.Break(&tc)
	mustPanic(t, "double Break", "already broken", func() { a.Break(&tc) })
	a.Exit(&tc)
	untracked := sever.NewActive("untracked")
	tu, _ := untracked.Enter()
	untracked.Exit(&tu)
	mustPanic(t, "double Exit without tracking", "already exited", func() { untracked.Exit(&tu) })
}

func mustPanic(t *testing.T, what, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("%s did not panic", what)
		}
		if msg, _ := r.(string); !strings.Contains(msg, want) {
			t.Fatalf("%s panicked with %q, want it to mention %q", what, r, want)
		}
	}()
	fn()
}

func TestDoReturnsErrNoDeviceAfterSever(t *testing.T) {
	a := sever.NewActive("gpiochip0")
	called := 0
	if err := a.Do(func() error { called++; return nil }); err != nil || called != 1 {
		t.Fatalf("Do on a live Active = %v (called %d)", err, called)
	}
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := a.Do(func() error { called++; return nil })
	if !errors.Is(err, sever.ErrNoDevice) || !errors.Is(err, syscall.ENODEV) || called != 1 {
		t.Fatalf("Do after Sever = %v (called %d), want ENODEV without calling", err, called)
	}
	if !strings.Contains(err.Error(), "gpiochip0") {
		t.Fatalf("error %q does not name the object", err)
	}
}

func TestDoExitsWhenCallbackPanics(t *testing.T) {
	a := sever.NewActive("dev")
	func() {
		defer func() { _ = recover() }()               // the panic is expected: the test is about the Active after it
		_ = a.Do(func() error { panic("driver bug") }) // returns nothing: it panics
	}()
	if a.Inside() != 0 {
		t.Fatal("a panicking callback left its access inside")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.Sever(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestEnterExitAllocateNothing(t *testing.T) {
	a := sever.NewActive("dev")
	if n := testing.AllocsPerRun(1000, func() {
		tok, _ := a.Enter()
		a.Exit(&tok)
	}); n != 0 {
		t.Fatalf("Enter+Exit allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = a.Do(func() error { return nil }) }); n != 0 {
		t.Fatalf("Do allocates %v times", n)
	}
}

// TestStressNoAccessAfterSever runs accessors against severers and
// self-removers on fresh Actives, checking on every iteration that no access
// begins after a Sever returned and none is inside when it returns.
func TestStressNoAccessAfterSever(t *testing.T) {
	iters := 2000
	if testing.Short() {
		iters = 200
	}
	const accessors = 8
	for iter := 0; iter < iters; iter++ {
		a := sever.NewActive("stress")
		var inside atomic.Int64
		var severed atomic.Bool
		var wg sync.WaitGroup
		var bad atomic.Value
		for g := 0; g < accessors; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					tok, ok := a.Enter()
					if !ok {
						return
					}
					inside.Add(1)
					if severed.Load() {
						bad.Store("an access began after Sever returned")
					}
					if g == 0 && iter%2 == 0 {
						// A self-remover among the accessors.
						inside.Add(-1)
						if _, err := a.SeverSelf(context.Background(), &tok); err != nil {
							t.Error(err)
						}
						severed.Store(true)
						a.Exit(&tok)
						return
					}
					inside.Add(-1)
					a.Exit(&tok)
				}
			}()
		}
		for s := 0; s < 2; s++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := a.Sever(context.Background()); err != nil {
					bad.Store(err.Error())
				}
				if n := inside.Load(); n != 0 {
					bad.Store("Sever returned with accesses inside")
				}
				severed.Store(true)
			}()
		}
		wg.Wait()
		if v := bad.Load(); v != nil {
			t.Fatalf("iteration %d: %v", iter, v)
		}
		if a.Inside() != 0 {
			t.Fatalf("iteration %d: %d accesses counted after everyone exited", iter, a.Inside())
		}
	}
}

// TestDeferredExitSeesSeverSelf: the Token is marked broken through the
// same pointer a deferred Exit uses, so a SeverSelf that gives up at its
// deadline cannot make the deferred Exit take away another caller's count
// (which would let a later Sever return with that caller still inside).
func TestDeferredExitSeesSeverSelf(t *testing.T) {
	a := sever.NewActive("dev/reset")
	other, _ := a.Enter()
	func() {
		tok, _ := a.Enter()
		defer a.Exit(&tok)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		if _, err := a.SeverSelf(ctx, &tok); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("SeverSelf with another access inside = %v", err)
		}
	}()
	if n := a.Inside(); n != 1 {
		t.Fatalf("Inside = %d after the self-remover's deferred Exit, want the other caller's 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := a.Sever(ctx); err == nil {
		t.Fatal("Sever returned while another caller was still inside")
	}
	a.Exit(&other)
}

// copyToken copies a Token behind go vet's back, as code that ignores vet's
// copylocks report would.
func copyToken(dst, src *sever.Token) {
	reflect.ValueOf(dst).Elem().Set(reflect.ValueOf(src).Elem())
}

func TestExitOfStaleCopyWithNothingInsidePanicsBeforeAnyChange(t *testing.T) {
	a := sever.NewActive("dev")
	tok, _ := a.Enter()
	var cp sever.Token
	copyToken(&cp, &tok)
	a.Exit(&tok)
	mustPanic(t, "Exit of a stale copy", "already exited", func() { a.Exit(&cp) })
	if n := a.Inside(); n != 0 {
		t.Fatalf("Inside = %d after a refused stale Exit, want 0", n)
	}
	// Still usable: a new access counts, and Sever waits for it.
	t2, ok := a.Enter()
	if !ok {
		t.Fatal("Enter failed after a recovered misuse")
	}
	assertSeverWaits(t, a)
	a.Exit(&t2)
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The case that used to be silent: a stale copy exits while another access
// is inside — on the very slot the copy names, or on another — and that
// other access must still hold off Sever.
func TestExitOfStaleCopyWhileAnotherIsInsideChangesNothing(t *testing.T) {
	for _, sameSlot := range []bool{true, false} {
		a := sever.NewActive("dev")
		tok, _ := a.Enter()
		var cp sever.Token
		copyToken(&cp, &tok)
		a.Exit(&tok)
		var reuse sever.Token
		if !sameSlot {
			reuse, _ = a.Enter() // retakes the copy's slot, so the innocent access lands on another
		}
		other, _ := a.Enter() // the innocent access
		if !sameSlot {
			a.Exit(&reuse) // the copy's slot is free again, a generation on
		}
		mustPanic(t, "Exit of a stale copy", "already exited", func() { a.Exit(&cp) })
		if n := a.Inside(); n != 1 {
			t.Fatalf("sameSlot=%v: Inside = %d after the refused stale Exit, want the innocent access's 1", sameSlot, n)
		}
		assertSeverWaits(t, a)
		a.Exit(&other) // the innocent access exits normally, no panic
		if err := a.Sever(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// assertSeverWaits checks that a Sever of a does not return nil while an
// access is inside (it begins the severing).
func assertSeverWaits(t *testing.T, a *sever.Active) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := a.Sever(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sever with an access inside returned %v, want it to wait until the deadline", err)
	}
}

func TestExitOfForeignTokenChangesNeitherActive(t *testing.T) {
	a := sever.NewActive("a")
	b := sever.NewActive("b")
	ta, _ := a.Enter()
	tb, _ := b.Enter()
	mustPanic(t, "Exit of b's Token on a", "did not issue", func() { a.Exit(&tb) })
	mustPanic(t, "Break of b's Token on a", "did not issue", func() { a.Break(&tb) })
	if a.Inside() != 1 || b.Inside() != 1 {
		t.Fatalf("Inside = %d, %d after refused foreign Exits, want 1, 1", a.Inside(), b.Inside())
	}
	b.Exit(&tb)
	a.Exit(&ta)
	if a.Inside() != 0 || b.Inside() != 0 {
		t.Fatalf("Inside = %d, %d after the real Exits", a.Inside(), b.Inside())
	}
}

func TestBreakOfStaleCopyPanicsBeforeAnyChange(t *testing.T) {
	a := sever.NewActive("dev")
	tok, _ := a.Enter()
	var cp sever.Token
	copyToken(&cp, &tok)
	a.Break(&tok)
	other, _ := a.Enter()
	mustPanic(t, "Exit of a copy made before Break", "already exited", func() { a.Exit(&cp) })
	a.Exit(&tok) // the broken Token itself: fine
	if n := a.Inside(); n != 1 {
		t.Fatalf("Inside = %d, want the other access's 1", n)
	}
	assertSeverWaits(t, a)
	a.Exit(&other)
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// With WithLog, misuse is recorded as check.Misuse instead of panicking, and
// changes nothing.
func TestMisuseWithLogIsRecordedNotPanicked(t *testing.T) {
	var log check.Log
	a := sever.NewActive("usb1/1-1", sever.WithLog(&log))
	b := sever.NewActive("other")
	tok, _ := a.Enter()
	var cp sever.Token
	copyToken(&cp, &tok)
	a.Exit(&tok)
	inside, _ := a.Enter()
	a.Exit(&cp)            // stale copy
	a.Exit(&sever.Token{}) // zero Token
	tb, _ := b.Enter()
	a.Exit(&tb) // foreign
	a.Break(&cp)
	if got := log.Count(check.Misuse); got != 4 {
		t.Fatalf("log has %d Misuse violations, want 4: %v", got, log.Violations())
	}
	for _, v := range log.Violations() {
		if v.Object != "usb1/1-1" || v.Stack == "" {
			t.Fatalf("violation does not name the Active and its stack: %+v", v)
		}
	}
	if a.Inside() != 1 || b.Inside() != 1 {
		t.Fatalf("Inside = %d, %d after recorded misuse, want 1, 1", a.Inside(), b.Inside())
	}
	if _, err := a.SeverSelf(context.Background(), &cp); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("SeverSelf with a stale Token = %v, want EINVAL", err)
	}
	assertSeverWaits(t, a)
	a.Exit(&inside)
	b.Exit(&tb)
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestZeroAndNilActivePanicNamingTheMisuse(t *testing.T) {
	var zero sever.Active
	var nilA *sever.Active
	mustPanic(t, "Enter on a zero Active", "zero Active", func() { zero.Enter() })
	mustPanic(t, "Do on a zero Active", "zero Active", func() { _ = zero.Do(func() error { return nil }) })
	mustPanic(t, "Sever on a zero Active", "zero Active", func() { _ = zero.Sever(context.Background()) })
	mustPanic(t, "Exit on a zero Active", "zero Active", func() { zero.Exit(&sever.Token{}) })
	mustPanic(t, "Err on a zero Active", "zero Active", func() { _ = zero.Err() })
	mustPanic(t, "Enter on a nil Active", "nil *Active", func() { nilA.Enter() })
	mustPanic(t, "Sever on a nil Active", "nil *Active", func() { _ = nilA.Sever(context.Background()) })
	mustPanic(t, "Severed on a nil Active", "nil *Active", func() { nilA.Severed() })
	mustPanic(t, "Exit on a nil Active", "nil *Active", func() { nilA.Exit(&sever.Token{}) })
}

func TestSeverInsideOwnDoFailsWithEDEADLK(t *testing.T) {
	var log check.Log
	a := sever.NewActive("cp2112/gpio", sever.WithLog(&log))
	start := time.Now()
	var err error
	doErr := a.Do(func() error {
		err = a.Sever(context.Background())
		return nil
	})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Sever inside its own Do took %v to fail, want under 1s", d)
	}
	if !errors.Is(err, syscall.EDEADLK) || !errors.Is(err, sever.ErrDeadlock) {
		t.Fatalf("Sever inside its own Do = %v, want EDEADLK", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "cp2112/gpio") || !strings.Contains(msg, "SeverSelf") {
		t.Fatalf("error %q does not name the object and point to SeverSelf", msg)
	}
	if doErr != nil || log.Count(check.Misuse) != 1 {
		t.Fatalf("Do = %v, log = %v; want nil and one Misuse", doErr, log.Violations())
	}
	// Severing began: the Do has exited, so a later Sever completes.
	if _, ok := a.Enter(); ok {
		t.Fatal("Enter succeeded after the refused Sever began severing")
	}
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Only a Do of the same Active is a self-deadlock: a Sever inside another
// Active's Do waits as usual.
func TestSeverInsideAnotherActivesDoIsNotDeadlock(t *testing.T) {
	a := sever.NewActive("a")
	b := sever.NewActive("b")
	tok, _ := a.Enter()
	var err error
	if derr := b.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err = a.Sever(ctx)
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sever of a inside b.Do with a's access stuck = %v, want DeadlineExceeded", err)
	}
	a.Exit(&tok)
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogReportsAStuckSeverOnce(t *testing.T) {
	lines := make(chan string, 4)
	a := sever.NewActive("zram0", sever.WithTracking(),
		sever.WithWatchdog(40*time.Millisecond, func(l string) { lines <- l }))
	var tok sever.Token
	enterHere(t, a, &tok) // a forgotten Exit
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := a.Sever(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sever with a forgotten Exit = %v", err)
	}
	if len(lines) != 1 {
		t.Fatalf("watchdog reported %d times, want once", len(lines))
	}
	l := <-lines
	for _, want := range []string{`"zram0"`, "waited", "1 accesses still inside", "enterHere"} {
		if !strings.Contains(l, want) {
			t.Fatalf("watchdog line %q does not contain %q", l, want)
		}
	}
	a.Exit(&tok)
	if err := a.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 0 {
		t.Fatalf("watchdog reported a Sever that did not wait: %q", <-lines)
	}
}

// More accesses inside at once than an Active has shard slots spill into
// blocks; they count, drain and are checked like the others.
func TestManyAccessesInsideSpillAndDrain(t *testing.T) {
	a := sever.NewActive("dev")
	b := sever.NewActive("other")
	const n = 16*64 + 50 // more than the slots of the widest Active
	toks := make([]sever.Token, n)
	for i := range toks {
		var ok bool
		if toks[i], ok = a.Enter(); !ok {
			t.Fatal("Enter failed")
		}
	}
	if got := a.Inside(); got != n {
		t.Fatalf("Inside = %d, want %d", got, n)
	}
	last := &toks[n-1]
	mustPanic(t, "Exit of a spilled Token on another Active", "did not issue", func() { b.Exit(last) })
	var cp sever.Token
	copyToken(&cp, last)
	a.Exit(last)
	mustPanic(t, "Exit of a stale spilled Token", "already exited", func() { a.Exit(&cp) })
	done := make(chan error)
	go func() { done <- a.Sever(context.Background()) }()
	<-a.Severed()
	for i := range toks[:n-1] {
		select {
		case err := <-done:
			t.Fatalf("Sever returned %v with %d accesses inside", err, n-1-i)
		default:
		}
		a.Exit(&toks[i])
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
