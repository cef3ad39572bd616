package sever_test

import (
	"context"
	"errors"
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
	tok := enterHere(t, a)
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

func enterHere(t *testing.T, a *sever.Active) sever.Token {
	tok, ok := a.Enter()
	if !ok {
		t.Fatal("Enter failed")
	}
	return tok
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
	a.Sever(context.Background())
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
		defer func() { recover() }()
		a.Do(func() error { panic("driver bug") })
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
	if n := testing.AllocsPerRun(1000, func() { a.Do(func() error { return nil }) }); n != 0 {
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
						a.SeverSelf(context.Background(), &tok)
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
