package sever_test

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

func TestRefReleaseRunsOnceOnLastPut(t *testing.T) {
	var released atomic.Int32
	r := sever.NewRef("shell", func() { released.Add(1) })
	var wg sync.WaitGroup
	for range 64 {
		r.Get(nil)
		wg.Add(1)
		go func() { defer wg.Done(); r.Put(nil) }()
	}
	wg.Wait()
	if released.Load() != 0 {
		t.Fatal("released while the creator still held its reference")
	}
	r.Put(nil)
	if released.Load() != 1 {
		t.Fatalf("release ran %d times, want 1", released.Load())
	}
	if r.TryGet(nil) {
		t.Fatal("TryGet succeeded after release")
	}
}

func TestRefReleaseRunsOnPuttingGoroutine(t *testing.T) {
	var inRelease bool
	r := sever.NewRef("shell", func() { inRelease = true })
	r.Put(nil)
	if !inRelease { // no synchronization needed: same goroutine
		t.Fatal("release did not run synchronously in the last Put")
	}
}

func TestRefMisusePanicsNamingTheObject(t *testing.T) {
	r := sever.NewRef("gpiochip0 shell", nil)
	r.Put(nil)
	mustPanic(t, "Put after release", `"gpiochip0 shell"`, func() { r.Put(nil) })
	r2 := sever.NewRef("irq 17", nil)
	r2.Put(nil)
	mustPanic(t, "Get after release", `"irq 17": Get after release`, func() { r2.Get(nil) })
}

func TestRefTrackingNamesHolders(t *testing.T) {
	r := sever.NewRef("i2c-3", nil, sever.WithTracking())
	r.Get("eeprom at 0x50")
	hs := r.Holders()
	if len(hs) != 2 || hs[1].Tag != "eeprom at 0x50" || !strings.Contains(hs[1].Stack, "TestRefTrackingNamesHolders") {
		t.Fatalf("Holders = %v, want the creator and the eeprom with its stack", hs)
	}
	mustPanic(t, "Put of an unheld tag", "without a matching Get", func() { r.Put("nobody") })
	if r.Count() != 2 {
		t.Fatalf("a refused Put changed the count to %d", r.Count())
	}
	r.Put("eeprom at 0x50")
	r.Put(nil)
}

func TestRefAuditReportsReferencesAfterUnregister(t *testing.T) {
	var log check.Log
	r := sever.NewRef("cp2112 private data", nil, sever.WithTracking())
	r.Get("leaky consumer")
	err := r.Audit(&log, 1)
	if !errors.Is(err, sever.ErrBusy) {
		t.Fatalf("Audit = %v, want ErrBusy", err)
	}
	vs := log.Violations()
	if len(vs) != 1 || vs[0].Class != check.ReferenceAfterUnregister || len(vs[0].Holders) != 2 ||
		!strings.Contains(vs[0].Holders[1], "leaky consumer") {
		t.Fatalf("log = %v, want one ReferenceAfterUnregister naming the leaky consumer", vs)
	}
	r.Put("leaky consumer")
	if err := r.Audit(&log, 1); err != nil {
		t.Fatalf("Audit with only the creator's reference: %v", err)
	}
}

func TestRefTryGetRacesWithLastPut(t *testing.T) {
	for range 1000 {
		var released atomic.Int32
		r := sever.NewRef("x", func() { released.Add(1) })
		var got atomic.Bool
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); r.Put(nil) }()
		go func() {
			defer wg.Done()
			if r.TryGet(nil) {
				got.Store(true)
				r.Put(nil)
			}
		}()
		wg.Wait()
		if released.Load() != 1 {
			t.Fatalf("release ran %d times (TryGet succeeded: %v)", released.Load(), got.Load())
		}
	}
}
