package sever_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

func TestCallRecoversWithoutALog(t *testing.T) {
	s := sever.NewScope("dev", nil)
	err := s.Call("dev: Show", func() error { panic("boom") })
	if !errors.Is(err, sever.ErrIO) {
		t.Fatalf("Call of a panicking fn without a log = %v, want an error wrapping EIO (and no panic)", err)
	}
	if err := s.Call("dev: Show", func() error { return nil }); err != nil {
		t.Fatalf("the scope is unusable after a recovered fault: %v", err)
	}
}

func panickingDriverCode() error { panic("driver bug") }

func TestCallRecordsTheFaultWithThePanickingStack(t *testing.T) {
	log := &check.Log{}
	s := sever.NewScope("dev", nil, sever.WithLog(log))
	err := s.Call("dev: Store", panickingDriverCode)
	if !errors.Is(err, sever.ErrIO) {
		t.Fatalf("Call = %v, want EIO", err)
	}
	vs := log.Violations()
	if len(vs) != 1 || vs[0].Class != check.DriverFault {
		t.Fatalf("violations %v, want one DriverFault", vs)
	}
	if !strings.Contains(vs[0].Stack, "panickingDriverCode") || !strings.Contains(vs[0].Detail, "driver bug") {
		t.Errorf("the fault does not name the panicking function and value: detail %q stack\n%s", vs[0].Detail, vs[0].Stack)
	}
}

func TestCallIntoAGoneOwnerIsRefusedAndRecorded(t *testing.T) {
	log := &check.Log{}
	o := sever.NewOwner("mod", nil, sever.WithLog(log))
	s := sever.NewScope("dev", nil, sever.WithLog(log))
	if err := o.Unload(context.Background(), sever.UnloadForce); err != nil {
		t.Fatal(err)
	}
	called := false
	err := s.InvokeAs(o, "mod: fn", func() error { called = true; return nil })
	if called || !errors.Is(err, sever.ErrNoDevice) {
		t.Fatalf("call into a gone owner: called %v, err %v; want not called, ENODEV", called, err)
	}
	if log.Count(check.CallIntoGoneOwner) != 1 {
		t.Errorf("the refused call was not recorded: %v", log.Violations())
	}
}

func TestCallIntoAGoingOwnerIsRefusedQuietly(t *testing.T) {
	log := &check.Log{}
	o := sever.NewOwner("mod", nil, sever.WithLog(log))
	s := sever.NewScope("dev", o, sever.WithLog(log))
	inHook := make(chan struct{})
	release := make(chan struct{})
	mustOnUnload(t, o, "test", func(context.Context) error { close(inHook); <-release; return nil })
	done := make(chan error)
	go func() { done <- o.Unload(context.Background(), sever.UnloadForce) }()
	<-inHook
	err := s.Call("mod: fn", func() error { t.Error("called into a going owner"); return nil })
	close(release)
	if uerr := <-done; uerr != nil {
		t.Fatal(uerr)
	}
	if !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("Call during unload = %v, want ENODEV", err)
	}
	if !log.Clean() {
		t.Errorf("a refusal during unload is the protocol at work, not a breach: %v", log.Violations())
	}
}

func TestCallPinsTheOwnerOfTheCode(t *testing.T) {
	o := sever.NewOwner("libata", nil)
	s := sever.NewScope("queue", nil)
	inside := make(chan struct{})
	leave := make(chan struct{})
	var running atomic.Bool
	go func() {
		// it entered (the test waits for inside): its error is fn's nil
		_ = s.InvokeAs(o, "libata: queuecommand", func() error {
			running.Store(true)
			close(inside)
			<-leave
			running.Store(false)
			return nil
		})
	}()
	<-inside
	unloaded := make(chan error)
	go func() { unloaded <- o.Unload(context.Background(), sever.UnloadForce) }()
	select {
	case err := <-unloaded:
		t.Fatalf("the owner unloaded (%v) while a call into its code was running", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(leave)
	if err := <-unloaded; err != nil {
		t.Fatal(err)
	}
	if running.Load() {
		t.Error("the call was still running when Unload returned")
	}
}

func TestSeverDrainsAndThenRefuses(t *testing.T) {
	s := sever.NewScope("dev", nil)
	inside := make(chan struct{})
	leave := make(chan struct{})
	var finished atomic.Bool
	go func() {
		// it entered (the test waits for inside): its error is fn's nil
		_ = s.Call("dev: Read", func() error { close(inside); <-leave; finished.Store(true); return nil })
	}()
	<-inside
	severed := make(chan error)
	go func() { severed <- s.Sever(context.Background()) }()
	<-s.Severing()
	if err := s.Call("dev: Read", func() error { t.Error("call began after severing"); return nil }); !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("Call while severing = %v, want ENODEV", err)
	}
	close(leave)
	if err := <-severed; err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Error("Sever returned before the call in flight finished")
	}
	if s.State() != sever.ScopeSevered {
		t.Errorf("state %v after Sever, want severed", s.State())
	}
}

func TestReleaseRunsOnceAtCloseOrAtSever(t *testing.T) {
	log := &check.Log{}
	o := sever.NewOwner("mod", nil, sever.WithLog(log))
	s := sever.NewScope("dev", o, sever.WithLog(log))
	var rel [3]atomic.Int32
	var shells [3]*sever.Shell
	for i := range shells {
		sh, err := s.Open(nil, func() { rel[i].Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		shells[i] = sh
	}
	if o.Pins() != 3 {
		t.Errorf("three opens hold %d pins on the owner, want 3", o.Pins())
	}
	if err := shells[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range rel {
		if n := rel[i].Load(); n != 1 {
			t.Errorf("open %d: Release ran %d times, want 1", i+1, n)
		}
	}
	if o.Pins() != 0 {
		t.Errorf("after Sever the owner still has %d pins: the opens' pins must go at release, not at close", o.Pins())
	}
	if err := o.Unload(context.Background(), sever.UnloadTry); err != nil {
		t.Errorf("try unload after Sever with files still open: %v", err)
	}
	for _, sh := range shells[1:] {
		if _, err := sh.Poll(0); !errors.Is(err, sever.ErrNoDevice) {
			t.Errorf("Poll of a severed shell: %v, want ENODEV", err)
		}
		if err := sh.Call("dev: Read", func() error { t.Error("called through a severed shell"); return nil }); !errors.Is(err, sever.ErrNoDevice) {
			t.Errorf("Call through a severed shell: %v", err)
		}
		if err := sh.Close(); err != nil {
			t.Errorf("Close of a severed shell: %v", err)
		}
		if err := sh.Close(); !errors.Is(err, sever.ErrClosed) {
			t.Errorf("second Close: %v, want EBADF", err)
		}
	}
	for i := range rel {
		if n := rel[i].Load(); n != 1 {
			t.Errorf("open %d: Release ran %d times after the closes, want 1", i+1, n)
		}
	}
	if vs := log.Quiesce(context.Background()); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
}

func TestSeverWakesWaitersWithErrHup(t *testing.T) {
	s := sever.NewScope("dev", nil)
	sh, err := s.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan sever.Events)
	go func() {
		ev, _, _ := sh.Wait(context.Background(), sh.Seq())
		got <- ev
	}()
	for {
		time.Sleep(time.Millisecond)
		if s.Shells() == 1 {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	if err := s.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ev := <-got; ev != sever.EventErr|sever.EventHup {
		t.Errorf("a waiter woke with %v, want ERR|HUP", ev)
	}
	if err := sh.Close(); err != nil {
		t.Error(err)
	}
}

func TestConcurrentSeversJoin(t *testing.T) {
	s := sever.NewScope("dev", nil)
	var released atomic.Int32
	leave := make(chan struct{})
	if _, err := s.Open(nil, func() { <-leave; released.Add(1) }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Sever(context.Background()); err != nil {
				t.Error(err)
			}
			if released.Load() != 1 {
				t.Error("a Sever returned before the release step had run")
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	close(leave)
	wg.Wait()
}

func TestAdoptUnderASeveringParentSeversAtOnce(t *testing.T) {
	p := sever.NewScope("parent", nil)
	if err := p.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := sever.NewScope("child", nil)
	if err := p.Adopt(context.Background(), c); !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("Adopt under a severed parent: %v, want ENODEV", err)
	}
	if c.State() != sever.ScopeSevered {
		t.Errorf("child adopted by a severed parent is %v, want severed", c.State())
	}
}

func TestParentSeversChildrenNewestFirstAndChildrenUnlink(t *testing.T) {
	p := sever.NewScope("parent", nil)
	var order []string
	var mu sync.Mutex
	kids := make([]*sever.Scope, 3)
	for i, name := range []string{"a", "b", "c"} {
		kids[i] = sever.NewScope(name, nil)
		kids[i].OnSever(func() { mu.Lock(); order = append(order, name); mu.Unlock() })
		if err := p.Adopt(context.Background(), kids[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := kids[1].Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := p.Children(); n != 2 {
		t.Errorf("a severed child stayed on its parent's list: %d children, want 2", n)
	}
	if err := p.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ","); got != "b,c,a" {
		t.Errorf("sever order %s, want b (itself), then c, a: newest first", got)
	}
	if n := p.Children(); n != 0 {
		t.Errorf("%d children left after the parent's Sever", n)
	}
}

func TestSeverSeversRegionsFreedAtLastShell(t *testing.T) {
	log := &check.Log{}
	r, err := sever.NewRegion("ring", make([]byte, 8), sever.WithLog(log))
	if err != nil {
		t.Fatal(err)
	}
	s := sever.NewScope("uio0", nil)
	if err := s.AddRegion(r); err != nil {
		t.Fatal(err)
	}
	sh, err := s.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r.Freed() {
		t.Fatal("the region was freed while a shell still held it")
	}
	if err := sh.Close(); err != nil {
		t.Error(err)
	}
	if !r.Freed() {
		t.Error("region not freed after the last shell went")
	}
	if v := log.Violations(); len(v) != 0 {
		t.Errorf("region freed other than once: %v", v)
	}
}

func TestOpenOfAPanickingOpenHoldsNothing(t *testing.T) {
	o := sever.NewOwner("mod", nil)
	s := sever.NewScope("dev", o)
	released := false
	_, err := s.Open(func() error { panic("open bug") }, func() { released = true })
	if !errors.Is(err, sever.ErrIO) {
		t.Fatalf("Open with a panicking open: %v, want EIO", err)
	}
	if o.Pins() != 0 || released {
		t.Errorf("failed Open left %d pins, release ran: %v", o.Pins(), released)
	}
	if err := s.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func ExampleScope() {
	s := sever.NewScope("dev/ttyUSB0", nil)

	// consumer: one call into the provider
	err := s.Call("dev/ttyUSB0: Read", func() error { return nil })
	fmt.Println(err)

	// consumer: an open file
	sh, _ := s.Open(nil, func() { fmt.Println("release") })

	// remover
	// release runs here: the file is still open
	if err := s.Sever(context.Background()); err != nil {
		fmt.Println(err)
	}
	err = sh.Call("dev/ttyUSB0: Read", func() error { return nil })
	fmt.Println(errors.Is(err, sever.ErrNoDevice))
	// no provider code runs
	if err := sh.Close(); err != nil {
		fmt.Println(err)
	}
	// Output:
	// <nil>
	// release
	// true
}

// Rule: a Scope's Context is cancelled when severing begins, with the
// scope's Gone error as its cause — whether it was asked for before the
// sever or after.
func TestScopeContextEndsWhenSeveringBegins(t *testing.T) {
	s := sever.NewScope("ctx", nil)
	before := s.Context()
	if before.Err() != nil {
		t.Fatal("a live scope's Context is already done")
	}
	s.Deny()
	select {
	case <-before.Done():
	default:
		t.Fatal("Deny did not cancel the Context asked for before it")
	}
	if !errors.Is(context.Cause(before), syscall.ENODEV) {
		t.Errorf("cause %v, want the scope's Gone error (ENODEV)", context.Cause(before))
	}
	if err := s.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	late := sever.NewScope("late", nil)
	if err := late.Sever(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ctx := late.Context(); ctx.Err() == nil || !errors.Is(context.Cause(ctx), syscall.ENODEV) {
		t.Errorf("the Context of a severed scope: err %v, cause %v; want cancelled by ENODEV", ctx.Err(), context.Cause(ctx))
	}
}
