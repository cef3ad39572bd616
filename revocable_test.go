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
	go r.Access(func(h *regs) error {
		close(entered)
		time.Sleep(20 * time.Millisecond)
		if h.freed.Load() {
			t.Error("value released while an Access was running")
		}
		return nil
	})
	<-entered
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Revoke(context.Background()); err != nil {
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
	go r.Access(func(int) error { close(entered); <-stop; return nil })
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := r.Revoke(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Revoke with a stuck Access = %v", err)
	}
	if released.Load() {
		t.Fatal("released while an Access was still running")
	}
	close(stop)
	if err := r.Revoke(context.Background()); err != nil || !released.Load() {
		t.Fatalf("later Revoke = %v, released %v", err, released.Load())
	}
}
