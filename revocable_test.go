package sever_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
)

type regs struct{ freed atomic.Bool }

func TestRevokeWaitsForAccessThenReleasesOnce(t *testing.T) {
	hw := &regs{}
	var releases atomic.Int32
	r := sever.NewRevocable("cp2112/regs", hw, func(h *regs) { releases.Add(1); h.freed.Store(true) })
	entered := make(chan struct{})
	go func() {
		// it entered (the test waits for entered): its error is fn's nil
		_ = r.Access(func(h *regs) error {
			close(entered)
			time.Sleep(20 * time.Millisecond)
			if h.freed.Load() {
				t.Error("value released while an Access was running")
			}
			return nil
		})
	}()
	<-entered
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Revoke(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := releases.Load(); n != 1 {
		t.Fatalf("release ran %d times, want 1", n)
	}
	err := r.Access(func(*regs) error { t.Error("Access ran after Revoke"); return nil })
	if !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("Access after Revoke = %v, want ENODEV", err)
	}
}

func TestRevokeTimeoutKeepsValueUntilLaterRevoke(t *testing.T) {
	var released atomic.Bool
	r := sever.NewRevocable("v", 1, func(int) { released.Store(true) })
	stop := make(chan struct{})
	entered := make(chan struct{})
	go func() {
		// it entered (the test waits for entered): its error is fn's nil
		_ = r.Access(func(int) error { close(entered); <-stop; return nil })
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := r.Revoke(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Revoke with a stuck Access = %v", err)
	}
	if released.Load() {
		t.Fatal("released while an Access was still running")
	}
	close(stop)
	if _, err := r.Revoke(context.Background()); err != nil || !released.Load() {
		t.Fatalf("later Revoke = %v, released %v", err, released.Load())
	}
}

func TestRevokeSaysWhichCallRevoked(t *testing.T) {
	r := sever.NewRevocable("v", 1, nil)
	var won atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := r.Revoke(context.Background())
			if err != nil {
				t.Error(err)
			}
			if ok {
				won.Add(1)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Errorf("%d Revoke calls reported revoking, want exactly 1", won.Load())
	}
}

func TestRevokeAsyncReleasesWhenTheLastHolderLeaves(t *testing.T) {
	released := make(chan int, 1)
	r := sever.NewRevocable("v", 7, func(v int) { released <- v })
	inside := make(chan struct{})
	leave := make(chan struct{})
	go func() {
		// it entered (the test waits for inside): its error is fn's nil
		_ = r.Access(func(int) error { close(inside); <-leave; return nil })
	}()
	<-inside
	if !r.RevokeAsync() {
		t.Fatal("the first RevokeAsync did not report revoking")
	}
	if r.RevokeAsync() {
		t.Error("a second RevokeAsync reported revoking too")
	}
	if err := r.Access(func(int) error { t.Error("Access after RevokeAsync"); return nil }); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Access after RevokeAsync = %v, want ENODEV", err)
	}
	select {
	case <-released:
		t.Fatal("released while a holder was still inside")
	case <-time.After(10 * time.Millisecond):
	}
	close(leave)
	if v := <-released; v != 7 {
		t.Errorf("released %d, want 7", v)
	}
	<-r.Released()
}

type embeddingProvider struct {
	regs sever.Revocable[*regs]
}

func TestRevocableEmbeddedWithInit(t *testing.T) {
	var p embeddingProvider
	if err := p.regs.Access(func(*regs) error { t.Error("Access of a zero Revocable ran"); return nil }); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Access of a zero Revocable = %v, want ENODEV", err)
	}
	if ok, err := p.regs.Revoke(context.Background()); ok || err != nil {
		t.Errorf("Revoke of a zero Revocable = %v, %v; want false, nil", ok, err)
	}
	hw := &regs{}
	p.regs.Init("embedded/regs", hw, func(h *regs) { h.freed.Store(true) })
	if err := p.regs.Access(func(h *regs) error {
		if h != hw {
			t.Error("Access got another value")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a second Init did not panic")
			}
		}()
		p.regs.Init("again", nil, nil)
	}()
	if p.regs.Name() != "embedded/regs" {
		t.Errorf("a refused Init changed the Revocable: name %q", p.regs.Name())
	}
	if ok, err := p.regs.Revoke(context.Background()); !ok || err != nil {
		t.Fatalf("Revoke = %v, %v", ok, err)
	}
	if !hw.freed.Load() {
		t.Error("release did not run")
	}
}

// Rule: an Access waiting on the Revocable's Context is released by
// Revoke, which then does not wait out the wait.
func TestRevokeCancelsTheContextOfAWaitingAccess(t *testing.T) {
	var r sever.Revocable[int]
	r.Init("port", 1, nil)
	in := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- r.Access(func(int) error {
			close(in)
			<-r.Context().Done() // a reply that never comes
			return context.Cause(r.Context())
		})
	}()
	<-in
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Revoke(ctx); err != nil {
		t.Fatalf("Revoke waited for the waiting Access: %v", err)
	}
	if err := <-done; !errors.Is(err, syscall.ENODEV) {
		t.Errorf("the Access's wait ended with %v, want ENODEV", err)
	}
	var zero sever.Revocable[int]
	if zero.Context().Err() == nil {
		t.Error("a zero Revocable's Context is not cancelled")
	}
}
