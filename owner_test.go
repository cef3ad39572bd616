package sever_test

import (
	"context"
	"errors"
	"fmt"
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

// Rule: an unload whose context ends after it began completes in the
// background and says so: the error wraps ErrUnloadInBackground
// (EINPROGRESS) and ctx's error and names the pins still held; the owner
// never returns to live and never stays going once they are put.
func TestUnloadWhoseContextEndsCompletesInTheBackground(t *testing.T) {
	var log check.Log
	exits := 0
	o := sever.NewOwner("libata", func() { exits++ }, sever.WithTracking(), sever.WithLog(&log))
	o.Get("scsi host0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	err := o.Unload(ctx, sever.UnloadForce)
	var he *sever.HoldersError
	if !errors.As(err, &he) || len(he.Holders) != 1 || he.Holders[0].Tag != "scsi host0" {
		t.Fatalf("Unload past deadline = %v, want the pin holder named", err)
	}
	if !errors.Is(err, sever.ErrUnloadInBackground) || !errors.Is(err, syscall.EINPROGRESS) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Unload past deadline = %v, want it to say the unload continues (EINPROGRESS) and why", err)
	}
	if sever.Errno(err) != syscall.EINPROGRESS {
		t.Errorf("Errno of the in-background error = %v, want EINPROGRESS", sever.Errno(err))
	}
	if o.State() != sever.OwnerGoing || o.TryGet("new user") {
		t.Fatalf("owner %v after the caller gave up; want going, refusing new pins", o.State())
	}
	o.Put("scsi host0") // the call in flight returns
	select {
	case <-o.Gone():
	case <-time.After(10 * time.Second):
		t.Fatal("the unload did not complete in the background after the last pin was put")
	}
	if exits != 1 || o.State() != sever.OwnerGone {
		t.Fatalf("after the background unload: exit ran %d times, state %v; want 1, gone", exits, o.State())
	}
	if vs := log.Quiesce(context.Background()); len(vs) != 0 {
		t.Errorf("checker: %v (an unload that completed is no violation)", vs)
	}
}

// Rule: a hook whose drain the caller's context cut short runs again in
// the background without the deadline, so what it had not severed yet
// (an open whose release drops a pin) is severed and the unload completes.
func TestUnloadReRunsUnfinishedHooksInTheBackground(t *testing.T) {
	var log check.Log
	o := sever.NewOwner("target_core_user", nil, sever.WithLog(&log))
	attr := sever.NewActive("tcmu0/attr")
	o.Get("open of tcmu0/attr") // dropped by the release at the end of the hook
	tok, _ := attr.Enter()      // a call in flight
	var runs []bool             // did each run of the hook have a deadline?
	var mu sync.Mutex
	mustOnUnload(t, o, "tcmu0", func(ctx context.Context) error {
		_, hasDeadline := ctx.Deadline()
		mu.Lock()
		runs = append(runs, hasDeadline)
		mu.Unlock()
		if err := attr.Sever(ctx); err != nil {
			return err
		}
		o.Put("open of tcmu0/attr")
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := o.Unload(ctx, sever.UnloadForce); !errors.Is(err, sever.ErrUnloadInBackground) {
		t.Fatalf("Unload with a drain cut short = %v, want ErrUnloadInBackground", err)
	}
	attr.Exit(&tok)
	select {
	case <-o.Gone():
	case <-time.After(10 * time.Second):
		t.Fatal("the unload did not complete in the background")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 2 || !runs[0] || runs[1] {
		t.Errorf("hook runs (with a deadline?) = %v, want [true false]: once with the caller's, once in the background without", runs)
	}
	if vs := log.Quiesce(context.Background()); len(vs) != 0 {
		t.Errorf("checker: %v (an unload that completed is no violation)", vs)
	}
}

// Rule: an Unload whose context is done before it begins changes nothing:
// the owner stays live, no hook runs.
func TestUnloadWithContextAlreadyDoneStaysLive(t *testing.T) {
	hooks := 0
	o := sever.NewOwner("zram", nil)
	mustOnUnload(t, o, "zram0", func(context.Context) error { hooks++; return nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, p := range []sever.Policy{sever.UnloadTry, sever.UnloadForce} {
		if err := o.Unload(ctx, p); !errors.Is(err, context.Canceled) || errors.Is(err, sever.ErrUnloadInBackground) {
			t.Errorf("Unload(%v) with a done context = %v, want context.Canceled and nothing begun", p, err)
		}
	}
	if o.State() != sever.OwnerLive || hooks != 0 || !o.TryGet("user") {
		t.Fatalf("after refused unloads: state %v, hooks run %d; want live and untouched", o.State(), hooks)
	}
	o.Put("user")
	if err := o.Unload(context.Background(), sever.UnloadTry); err != nil || hooks != 1 {
		t.Fatalf("a later Unload = %v (hooks %d)", err, hooks)
	}
}

// Rule: a second Unload of an owner unloading in the background joins it:
// nil once gone, the in-background error if its own context ends first.
func TestSecondUnloadJoinsTheBackgroundOne(t *testing.T) {
	o := sever.NewOwner("sd_mod", nil)
	o.Get("call in flight")
	short, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := o.Unload(short, sever.UnloadForce); !errors.Is(err, sever.ErrUnloadInBackground) {
		t.Fatalf("first Unload = %v", err)
	}
	if err := o.Unload(short, sever.UnloadTry); !errors.Is(err, sever.ErrUnloadInBackground) {
		t.Fatalf("joining Unload whose context is done = %v, want ErrUnloadInBackground", err)
	}
	joined := make(chan error)
	go func() { joined <- o.Unload(context.Background(), sever.UnloadTry) }()
	time.Sleep(5 * time.Millisecond)
	o.Put("call in flight")
	if err := <-joined; err != nil || o.State() != sever.OwnerGone {
		t.Fatalf("joining Unload = %v, state %v; want nil, gone", err, o.State())
	}
}

// Rule: an unload that never completes — a call in flight that never
// returns — is reported at quiesce, not silently stranded.
func TestUnloadNeverCompletingIsReportedAtQuiesce(t *testing.T) {
	var log check.Log
	o := sever.NewOwner("hung", nil, sever.WithLog(&log))
	o.Get("hung call")
	short, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := o.Unload(short, sever.UnloadForce); !errors.Is(err, sever.ErrUnloadInBackground) {
		t.Errorf("Unload with a pin held forever = %v, want it in the background", err)
	}
	q, cancelQ := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelQ()
	vs := log.Quiesce(q)
	if len(vs) != 1 || vs[0].Class != check.GoroutineLeft || !strings.Contains(vs[0].Object, "hung: unload") {
		t.Errorf("quiesce with the unload stuck: %v, want one goroutine-left naming the unload", vs)
	}
	o.Put("hung call") // let it finish, for goleak
	<-o.Gone()
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
	mustOnUnload(t, o, "zram0 attributes", func(ctx context.Context) error { return attr.Sever(ctx) })
	entered := make(chan struct{})
	go func() {
		// the Unload below waits for it: its error is fn's nil
		_ = attr.Do(func() error {
			close(entered)
			time.Sleep(10 * time.Millisecond)
			lock.Lock() // the attribute's store takes the module lock
			defer lock.Unlock()
			return nil
		})
	}()
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
	if err := o.Unload(context.Background(), sever.UnloadTry); err != nil {
		t.Fatal(err)
	}
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
	if err := o.Unload(context.Background(), sever.UnloadTry); err != nil {
		t.Fatal(err)
	}
	if _, err := o.OnUnload("late", func(context.Context) error { return nil }); !errors.Is(err, sever.ErrNoDevice) {
		t.Fatalf("OnUnload on a gone owner = %v", err)
	}
}

func TestOwnerMisusePanics(t *testing.T) {
	o := sever.NewOwner("m", nil)
	mustPanic(t, "Put without a pin", `"m": Put without a pin`, func() { o.Put(nil) })
	o2 := sever.NewOwner("m2", nil)
	if err := o2.Unload(context.Background(), sever.UnloadTry); err != nil {
		t.Fatal(err)
	}
	mustPanic(t, "Get after unload", "Get after unload", func() { o2.Get(nil) })
}

func TestUnloadHookFindingsAreReturnedAfterCompletion(t *testing.T) {
	exited := false
	o := sever.NewOwner("libata", func() { exited = true })
	mustOnUnload(t, o, "audit finding", func(context.Context) error { return sever.ErrBusy })
	if err := o.Unload(context.Background(), sever.UnloadForce); !errors.Is(err, sever.ErrBusy) || !exited || o.State() != sever.OwnerGone {
		t.Fatalf("unload with an audit finding = %v, exited %v, state %v; want the finding returned and the unload complete", err, exited, o.State())
	}
}

// A forced unload whose caller gives up while a call is still in flight:
// the unload is not abandoned half-way, it finishes in the background.
func ExampleOwner_Unload_inBackground() {
	mod := sever.NewOwner("target_core_user", func() { fmt.Println("target_core_user exit") })
	mod.Get("tcmu_queue_cmd in flight")

	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	err := mod.Unload(ctx, sever.UnloadForce) // the operator's Ctrl-C, say
	fmt.Println(errors.Is(err, sever.ErrUnloadInBackground), sever.Errno(err), mod.State())

	mod.Put("tcmu_queue_cmd in flight") // the call returns
	<-mod.Gone()
	fmt.Println(mod.State())
	// Output:
	// true operation now in progress going
	// target_core_user exit
	// gone
}

// mustOnUnload registers fn as o's unload hook name, failing the test if o
// refuses it.
func mustOnUnload(t *testing.T, o *sever.Owner, name string, fn func(context.Context) error) {
	t.Helper()
	if _, err := o.OnUnload(name, fn); err != nil {
		t.Fatalf("OnUnload %q: %v", name, err)
	}
}
