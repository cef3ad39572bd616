package sever_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sever-dev/sever"
)

// counter is an OnChange callback that counts its runs.
type counter struct{ n atomic.Int32 }

func (c *counter) fn() { c.n.Add(1) }

func TestOnChangeRunsOnceOnTheNextNotify(t *testing.T) {
	q := sever.NewWaitQueue("button")
	var c counter
	cancel := q.OnChange(c.fn)
	if n := c.n.Load(); n != 0 {
		t.Fatalf("OnChange ran fn %d times before any Notify", n)
	}
	q.Notify(sever.EventIn)
	if n := c.n.Load(); n != 1 {
		t.Fatalf("after a Notify fn ran %d times, want 1 (on the notifier's goroutine, before Notify returns)", n)
	}
	q.Notify(sever.EventIn)
	q.Sever()
	if n := c.n.Load(); n != 1 {
		t.Fatalf("after more Notifies and a Sever fn ran %d times, want once", n)
	}
	if cancel() {
		t.Fatal("cancel after fn ran reported true, want false")
	}
}

func TestOnChangeRunsOnceOnSever(t *testing.T) {
	q := sever.NewWaitQueue("button")
	var c counter
	cancel := q.OnChange(c.fn)
	q.Sever()
	q.Sever()
	q.Notify(sever.EventIn)
	if n := c.n.Load(); n != 1 {
		t.Fatalf("after Sever fn ran %d times, want 1", n)
	}
	if cancel() {
		t.Fatal("cancel after fn ran reported true, want false")
	}
}

func TestOnChangeRunsAtOnceWhenAlreadySevered(t *testing.T) {
	q := sever.NewWaitQueue("button")
	q.Sever()
	var c counter
	cancel := q.OnChange(c.fn)
	if n := c.n.Load(); n != 1 {
		t.Fatalf("OnChange on a severed queue ran fn %d times before returning, want 1", n)
	}
	if cancel() {
		t.Fatal("cancel of a registration that already ran reported true")
	}
}

func TestOnChangeRunsOnFree(t *testing.T) {
	q := sever.NewWaitQueue("button")
	var c counter
	q.OnChange(c.fn)
	q.Free()
	if n := c.n.Load(); n != 1 {
		t.Fatalf("after Free fn ran %d times, want 1: a registration must not be lost with the queue", n)
	}
}

func TestOnChangeNeverRunsAfterCancel(t *testing.T) {
	q := sever.NewWaitQueue("button")
	var c, other counter
	cancel := q.OnChange(c.fn)
	q.OnChange(other.fn)
	if !cancel() {
		t.Fatal("cancel of a pending registration reported false, want true")
	}
	if cancel() {
		t.Fatal("a second cancel reported true, want false")
	}
	q.Notify(sever.EventIn)
	q.Sever()
	if n := c.n.Load(); n != 0 {
		t.Fatalf("fn ran %d times after its cancel", n)
	}
	if n := other.n.Load(); n != 1 {
		t.Fatalf("the other registration ran %d times, want 1: cancel removed the wrong one", n)
	}
}

// TestOnChangeRunsAfterTheLockIsReleased: fn may call back into the queue
// (Poll, a new OnChange); it would deadlock if the queue's lock were held.
func TestOnChangeRunsAfterTheLockIsReleased(t *testing.T) {
	q := sever.NewWaitQueue("button")
	seq := q.Seq()
	var got sever.Events
	var again counter
	q.OnChange(func() {
		got, _ = q.Poll(seq)
		q.OnChange(again.fn) // re-arm, as a poller does
	})
	done := make(chan struct{})
	go func() {
		q.Notify(sever.EventPri)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify did not return: fn ran with the queue's lock held")
	}
	if got != sever.EventPri {
		t.Fatalf("Poll from fn = %v, want PRI: fn ran before the Notify was recorded", got)
	}
	if n := again.n.Load(); n != 0 {
		t.Fatalf("the registration fn made ran %d times during the same Notify, want 0", n)
	}
	q.Notify(sever.EventPri)
	if n := again.n.Load(); n != 1 {
		t.Fatalf("the registration fn made ran %d times at the next Notify, want 1", n)
	}
}

// TestOnChangeCancelRacingNotifyExactlyOne: either fn runs or cancel
// reports true, never both, never neither.
func TestOnChangeCancelRacingNotifyExactlyOne(t *testing.T) {
	for i := 0; i < 200; i++ {
		q := sever.NewWaitQueue("button")
		var c counter
		cancel := q.OnChange(c.fn)
		var cancelled atomic.Bool
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); q.Notify(sever.EventIn) }()
		go func() { defer wg.Done(); cancelled.Store(cancel()) }()
		wg.Wait()
		if ran := c.n.Load() == 1; ran == cancelled.Load() {
			t.Fatalf("round %d: fn ran %d times and cancel reported %v; want exactly one of them", i, c.n.Load(), cancelled.Load())
		}
	}
}

func TestOnChangeNilPanics(t *testing.T) {
	q := sever.NewWaitQueue("button")
	defer func() {
		if recover() == nil {
			t.Fatal("OnChange(nil) did not panic")
		}
		var c counter
		q.OnChange(c.fn) // the queue stays usable
		q.Notify(sever.EventIn)
		if c.n.Load() != 1 {
			t.Fatal("the queue did not work after the misuse")
		}
	}()
	q.OnChange(nil)
}

// TestShellOnChangeFiresOnNotifyAndAtSeveringNotAfterTheDrain: the scope's
// severing fires the callback as soon as Poll answers ERR|HUP, while a
// call is still inside and the drain waits for it; Scope.Notify runs the
// callbacks after its own lock is released.
func TestShellOnChangeFiresOnNotifyAndAtSeveringNotAfterTheDrain(t *testing.T) {
	s := sever.NewScope("uart0", nil)
	sh, err := s.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var shells int
	var c counter
	s.Notify(sever.EventIn) // before the registration: does not run it
	sh.OnChange(func() { shells = s.Shells(); c.fn() })
	s.Notify(sever.EventIn)
	if c.n.Load() != 1 || shells != 1 {
		t.Fatalf("after Scope.Notify fn ran %d times (saw %d shells), want once, after the scope's lock", c.n.Load(), shells)
	}

	inside, leave := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.Call("slow", func() error { close(inside); <-leave; return nil })
	}()
	<-inside
	fired := make(chan struct{})
	cancel := sh.OnChange(func() { close(fired) })
	severed := make(chan error)
	go func() { severed <- s.Sever(context.Background()) }()
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("the severing did not fire OnChange while the drain waited")
	}
	if ev, err := sh.Poll(0); ev != sever.EventErr|sever.EventHup || !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("Poll from the severing on = %v, %v; want ERR|HUP, ENODEV", ev, err)
	}
	close(leave)
	if err := <-severed; err != nil {
		t.Fatal(err)
	}
	if cancel() {
		t.Error("cancel after fn ran reported true")
	}
	if err := sh.Close(); err != nil {
		t.Fatal(err)
	}
	var after counter
	if sh.OnChange(after.fn)(); after.n.Load() != 1 {
		t.Fatal("OnChange on a closed shell did not run fn at once")
	}
}

// TestShellWaitWakesAtSeveringNotAfterTheDrain: a Wait asleep when the
// scope starts severing returns ERR|HUP and the Gone error then.
func TestShellWaitWakesAtSeveringNotAfterTheDrain(t *testing.T) {
	s := sever.NewScope("uart0", nil)
	sh, err := s.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inside, leave := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.Call("slow", func() error { close(inside); <-leave; return nil })
	}()
	<-inside
	type result struct {
		ev  sever.Events
		err error
	}
	woke := make(chan result)
	go func() {
		ev, _, err := sh.Wait(context.Background(), sh.Seq())
		woke <- result{ev, err}
	}()
	time.Sleep(time.Millisecond) // let the waiter fall asleep first, most of the time
	severed := make(chan error)
	go func() { severed <- s.Sever(context.Background()) }()
	select {
	case r := <-woke:
		if r.ev != sever.EventErr|sever.EventHup || !errors.Is(r.err, sever.ErrNoDevice) {
			t.Errorf("Wait woken by the severing = %v, %v; want ERR|HUP, ENODEV", r.ev, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Wait slept through the severing while the drain waited")
	}
	close(leave)
	if err := <-severed; err != nil {
		t.Fatal(err)
	}
	if err := sh.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestShellOnChangeRunsAtClose: Close runs a pending registration once,
// and fn may still use the shell.
func TestShellOnChangeRunsAtClose(t *testing.T) {
	s := sever.NewScope("uart0", nil)
	sh, err := s.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c counter
	cancel := sh.OnChange(func() {
		// fn may call into the shell: during Close, Poll answers as
		// before Close or, once closed, ErrClosed — never anything else.
		if _, err := sh.Poll(0); err != nil && !errors.Is(err, sever.ErrClosed) {
			t.Errorf("Poll from fn during Close = %v, want nil or ErrClosed", err)
		}
		if c.n.Add(1) != 1 {
			t.Error("fn ran twice")
		}
	})
	if err := sh.Close(); err != nil {
		t.Fatal(err)
	}
	if c.n.Load() != 1 || cancel() {
		t.Fatalf("Close ran fn %d times (cancel afterwards reported true?); want once", c.n.Load())
	}
	if err := s.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func ExampleWaitQueue_OnChange() {
	q := sever.NewWaitQueue("button")
	// Register first, then Poll: a Notify in between runs fn.
	cancel := q.OnChange(func() { fmt.Println("woken on the notifier's goroutine") })
	if ev, _ := q.Poll(q.Seq()); ev == 0 {
		fmt.Println("nothing yet")
	}
	q.Notify(sever.EventIn)
	fmt.Println("cancel after it ran:", cancel())
	// Output:
	// nothing yet
	// woken on the notifier's goroutine
	// cancel after it ran: false
}
