package sever_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

func TestWaitWakesOnNotifyAfterSince(t *testing.T) {
	q := sever.NewWaitQueue("pressure")
	seq := q.Seq()
	q.Notify(sever.EventIn)
	ev, seq2, err := q.Wait(context.Background(), seq)
	if err != nil || ev != sever.EventIn || seq2 <= seq {
		t.Fatalf("Wait after a Notify = %v, %d, %v", ev, seq2, err)
	}
	if ev, _ := q.Poll(seq2); ev != 0 {
		t.Fatalf("Poll since the latest seq = %v, want nothing", ev)
	}
	done := make(chan sever.Events)
	go func() {
		ev, _, _ := q.Wait(context.Background(), seq2)
		done <- ev
	}()
	time.Sleep(5 * time.Millisecond)
	q.Notify(sever.EventPri | sever.EventErr)
	if ev := <-done; ev != sever.EventPri|sever.EventErr {
		t.Fatalf("blocked waiter woke with %v, want PRI|ERR", ev)
	}
}

func TestSeverWakesBlockedWaiterWithErrHup(t *testing.T) {
	q := sever.NewWaitQueue("gpio line 3 events")
	type result struct {
		ev  sever.Events
		err error
	}
	done := make(chan result)
	go func() {
		ev, _, err := q.Wait(context.Background(), q.Seq())
		done <- result{ev, err}
	}()
	time.Sleep(5 * time.Millisecond)
	q.Sever()
	r := <-done
	if r.ev != sever.EventErr|sever.EventHup || !errors.Is(r.err, syscall.ENODEV) {
		t.Fatalf("waiter woke with %v, %v; want ERR|HUP and ENODEV", r.ev, r.err)
	}
	ev, _, err := q.Wait(context.Background(), 0)
	if ev != sever.EventErr|sever.EventHup || !errors.Is(err, sever.ErrNoDevice) {
		t.Fatalf("Wait after Sever = %v, %v; want at once ERR|HUP, ENODEV", ev, err)
	}
	select {
	case <-q.Changed():
	default:
		t.Fatal("Changed of a severed queue is not closed")
	}
}

func TestWaitHonoursContext(t *testing.T) {
	var q sever.WaitQueue // the zero queue is ready
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, _, err := q.Wait(ctx, q.Seq()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want DeadlineExceeded", err)
	}
}

// TestFreeUnderSleepingWaiterIsCaught is seed 002's bug written against
// WaitQueue: the queue is freed while a poller sleeps in it.
func TestFreeUnderSleepingWaiterIsCaught(t *testing.T) {
	var log check.Log
	q := sever.NewWaitQueue("psi trigger", sever.WithLog(&log))
	done := make(chan error)
	go func() {
		_, _, err := q.Wait(context.Background(), q.Seq())
		done <- err
	}()
	for q.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	q.Free()
	if err := <-done; !errors.Is(err, sever.ErrNoDevice) {
		t.Fatalf("waiter on a freed queue woke with %v", err)
	}
	if log.Count(check.UseAfterFree) < 1 {
		t.Fatalf("freeing a queue under a sleeping waiter was not caught: %v", log.Violations())
	}
	v := log.Violations()[0]
	if !strings.Contains(v.Cause, "TestFreeUnderSleepingWaiterIsCaught") {
		t.Fatalf("violation does not name the stack that freed the queue: %q", v.Cause)
	}
}

func TestUseAfterFreePanicsWithoutLog(t *testing.T) {
	q := sever.NewWaitQueue("q")
	q.Free()
	mustPanic(t, "Poll after Free", "use after free", func() { q.Poll(0) })
}

func TestEventsString(t *testing.T) {
	if s := (sever.EventErr | sever.EventHup).String(); s != "ERR|HUP" {
		t.Fatalf("String = %q", s)
	}
}
