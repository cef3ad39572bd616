package sever_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

func TestUnloadTryRefusesWhilePinnedAndChangesNothing(t *testing.T) {
	exited := false
	o := sever.NewOwner("ahci", func() { exited = true })
	if !o.TryGet("bound device sda") {
		t.Fatal("TryGet on a live owner failed")
	}
	err := o.Unload(context.Background(), sever.UnloadTry)
	if !errors.Is(err, sever.ErrBusy) || !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("Unload(Try) with a pin = %v, want EBUSY", err)
	}
	if o.State() != sever.OwnerLive || exited || !o.TryGet("another") {
		t.Fatal("a refused Unload(Try) changed the owner")
	}
	o.Put("another")
	o.Put("bound device sda")
	if err := o.Unload(context.Background(), sever.UnloadTry); err != nil || !exited || o.State() != sever.OwnerGone {
		t.Fatalf("Unload(Try) without pins = %v (exited %v, state %v)", err, exited, o.State())
	}
}

func TestUnloadForceSeversUsersBeforeExit(t *testing.T) {
	var order []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	o := sever.NewOwner("sd_mod", func() { note("exit") })
	// Two things the owner's code backs, each holding a pin the hook drops.
	for _, name := range []string{"node a", "node b"} {
		o.Get(name)
		if _, err := o.OnUnload(name, func(context.Context) error {
			note("sever " + name)
			o.Put(name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Unload(context.Background(), sever.UnloadForce); err != nil {
		t.Fatal(err)
	}
	want := "sever node b,sever node a,exit"
	if got := strings.Join(order, ","); got != want {
		t.Fatalf("unload order = %s, want %s (hooks newest first, exit last)", got, want)
	}
	if o.TryGet("late") {
		t.Fatal("TryGet succeeded on a gone owner")
	}
	if err := o.Unload(context.Background(), sever.UnloadForce); !errors.Is(err, sever.ErrNotExist) {
		t.Fatalf("second Unload = %v, want ErrNotExist", err)
	}
}

func TestUnloadWaitsForCallsInFlightOnly(t *testing.T) {
	o := sever.NewOwner("zram", nil)
	o.Get("store in flight")
	done := make(chan error)
	go func() { done <- o.Unload(context.Background(), sever.UnloadForce) }()
	time.Sleep(10 * time.Millisecond)
	if o.TryGet("new opener") {
		t.Fatal("TryGet succeeded while the owner was going")
	}
	select {
	case err := <-done:
		t.Fatalf("Unload returned (%v) with a call still in flight", err)
	default:
	}
	o.Put("store in flight")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestUnloadTimeoutNamesPinHolders(t *testing.T) {
	var log check.Log
	o := sever.NewOwner("libata", nil, sever.WithTracking(), sever.WithLog(&log))
	o.Get("scsi host0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	err := o.Unload(ctx, sever.UnloadForce)
	var he *sever.HoldersError
	if !errors.As(err, &he) || len(he.Holders) != 1 || he.Holders[0].Tag != "scsi host0" {
		t.Fatalf("Unload past deadline = %v, want the pin holder named", err)
	}
	if log.Count(check.SeverTimeout) != 1 || o.State() != sever.OwnerGoing {
		t.Fatalf("log %v, state %v", log.Violations(), o.State())
	}
	o.Put("scsi host0")
	if err := o.Unload(context.Background(), sever.UnloadForce); err != nil || o.State() != sever.OwnerGone {
		t.Fatalf("resumed Unload = %v, state %v", err, o.State())
	}
}

// TestUnloadSharedLockDoesNotDeadlock is seed 001's deadlock: an attribute
// and the module exit take the same lock. Unload drains the attribute
// (through its hook) before exit runs, so the two never wait on each other.
func TestUnloadSharedLockDoesNotDeadlock(t *testing.T) {
	var lock sync.Mutex
	attr := sever.NewActive("zram0/disksize")
	o := sever.NewOwner("zram", func() {
		lock.Lock() // the module exit takes the same lock
		defer lock.Unlock()
	})
	o.OnUnload("zram0 attributes", func(ctx context.Context) error { return attr.Sever(ctx) })
	entered := make(chan struct{})
	go attr.Do(func() error {
		close(entered)
		time.Sleep(10 * time.Millisecond)
		lock.Lock() // the attribute's store takes the module lock
		defer lock.Unlock()
		return nil
	})
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.Unload(ctx, sever.UnloadForce); err != nil {
		t.Fatalf("unload with a store in flight: %v", err)
	}
}

func TestCallIntoGoneOwnerIsRecordedNotMade(t *testing.T) {
	var log check.Log
	o := sever.NewOwner("scsi_mod", nil, sever.WithLog(&log))
	if !o.Call("scsi_target_reap", func() {}) {
		t.Fatal("Call into a live owner was not made")
	}
	o.Unload(context.Background(), sever.UnloadTry)
	ran := false
	if o.Call("scsi_target_reap", func() { ran = true }) || ran {
		t.Fatal("Call into a gone owner was made")
	}
	vs := log.Violations()
	if len(vs) != 1 || vs[0].Class != check.CallIntoGoneOwner || !strings.Contains(vs[0].Detail, "scsi_target_reap") {
		t.Fatalf("log = %v, want one CallIntoGoneOwner naming the site", vs)
	}
}

func TestOnUnloadRefusedOnceGoing(t *testing.T) {
	o := sever.NewOwner("m", nil)
	o.Unload(context.Background(), sever.UnloadTry)
	if _, err := o.OnUnload("late", func(context.Context) error { return nil }); !errors.Is(err, sever.ErrNoDevice) {
		t.Fatalf("OnUnload on a gone owner = %v", err)
	}
}

func TestOwnerMisusePanics(t *testing.T) {
	o := sever.NewOwner("m", nil)
	mustPanic(t, "Put without a pin", `"m": Put without a pin`, func() { o.Put(nil) })
	o2 := sever.NewOwner("m2", nil)
	o2.Unload(context.Background(), sever.UnloadTry)
	mustPanic(t, "Get after unload", "Get after unload", func() { o2.Get(nil) })
}

func TestUnloadHookErrorsOnlyStopForUnfinishedDrains(t *testing.T) {
	exited := false
	o := sever.NewOwner("libata", func() { exited = true })
	o.OnUnload("audit finding", func(context.Context) error { return sever.ErrBusy })
	if err := o.Unload(context.Background(), sever.UnloadForce); !errors.Is(err, sever.ErrBusy) || !exited || o.State() != sever.OwnerGone {
		t.Fatalf("unload with an audit finding = %v, exited %v, state %v; want the finding returned and the unload complete", err, exited, o.State())
	}
	exited = false
	o2 := sever.NewOwner("ahci", func() { exited = true })
	o2.OnUnload("stuck drain", func(context.Context) error { return context.DeadlineExceeded })
	if err := o2.Unload(context.Background(), sever.UnloadForce); !errors.Is(err, context.DeadlineExceeded) || exited || o2.State() != sever.OwnerGoing {
		t.Fatalf("unload with an unfinished drain = %v, exited %v, state %v; want it to stay going without exit", err, exited, o2.State())
	}
	if err := o2.Unload(context.Background(), sever.UnloadForce); err != nil || !exited {
		t.Fatalf("resumed unload = %v, exited %v", err, exited)
	}
}
