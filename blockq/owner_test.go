package blockq_test

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
)

// newOwnedQueue makes a queue whose driver d is o's code.
func newOwnedQueue(name string, o *sever.Owner, d blockq.Driver, depth int, opts ...sever.Option) *blockq.Queue {
	return blockq.New(name, blockq.OwnedBy(o, d), depth, opts...)
}

// TestForceUnloadOfTheDriversOwnerStopsItsCalls is the libata class of
// `sever stress --seed 7`: a request queue whose driver is a module's code,
// the module force-unloaded while requests are in flight, queued, and
// waiting for room. No driver call may start once the unload has begun,
// none may still be running when it returns, and nothing calls into the
// gone module afterwards.
func TestForceUnloadOfTheDriversOwnerStopsItsCalls(t *testing.T) {
	log := new(check.Log)
	o := sever.NewOwner("libata", nil, sever.WithLog(log))
	var inside, late atomic.Int32
	var unloaded atomic.Bool
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	drv := blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		if unloaded.Load() {
			late.Add(1)
		}
		inside.Add(1)
		defer inside.Add(-1)
		o.Call("libata queuecommand", func() {}) // the module's code: checked against its state
		entered <- struct{}{}
		<-release
		return nil
	})
	const depth = 2
	q := newOwnedQueue("sda", o, drv, depth, sever.WithLog(log))
	ctx := context.Background()
	errs := make(chan error, 6)
	for range 6 { // 2 with the driver, 2 queued, 2 waiting for room
		go func() { errs <- q.Submit(ctx, &blockq.Request{}) }()
	}
	<-entered
	<-entered
	for blockq.Admitted(q) < 6 {
		time.Sleep(time.Millisecond)
	}

	type result struct {
		err    error
		inside int32
	}
	done := make(chan result, 1)
	go func() {
		err := o.Unload(ctx, sever.UnloadForce)
		r := result{err, inside.Load()}
		unloaded.Store(true)
		done <- r
	}()
	time.Sleep(30 * time.Millisecond) // let the unload wait for the calls in flight, if it does
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatalf("force unload: %v", r.err)
	}
	if r.inside != 0 {
		t.Errorf("Unload returned with %d driver calls still running", r.inside)
	}
	var ok, gone int
	for range 6 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, syscall.ENODEV):
			gone++
		default:
			t.Errorf("Submit: %v, want nil or ENODEV", err)
		}
	}
	if ok != depth || gone != 6-depth {
		t.Errorf("%d requests completed and %d failed with ENODEV; want the %d in flight to complete and the rest to fail", ok, gone, depth)
	}
	if err := q.Submit(ctx, &blockq.Request{}); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Submit after the unload: %v, want ENODEV", err)
	}
	if n := late.Load(); n != 0 {
		t.Errorf("%d driver calls started after the unload returned", n)
	}
	if n := log.Count(check.CallIntoGoneOwner); n != 0 {
		t.Errorf("%d calls into the gone module: %v", n, log.Violations())
	}
	if err := q.Kill(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUnloadTryRefusesWhileACallIsInFlight: a driver call pins its owner,
// so a try-unload during the call is refused and changes nothing.
func TestUnloadTryRefusesWhileACallIsInFlight(t *testing.T) {
	o := sever.NewOwner("mod", nil)
	hold := make(chan struct{})
	entered := make(chan struct{})
	q := newOwnedQueue("vda", o, blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		close(entered)
		<-hold
		return nil
	}), 1)
	res := submit(context.Background(), q, 1)
	<-entered
	if err := o.Unload(context.Background(), sever.UnloadTry); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("try unload with a driver call in flight: %v, want EBUSY", err)
	}
	close(hold)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if err := q.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := o.Unload(context.Background(), sever.UnloadTry); err != nil {
		t.Errorf("try unload after the queue is killed: %v", err)
	}
}

// TestNewWithAGoneOwnerIsDying: a queue cannot outlive the code of its
// driver, so one made for an owner that is not live refuses everything.
func TestNewWithAGoneOwnerIsDying(t *testing.T) {
	o := sever.NewOwner("mod", nil)
	if err := o.Unload(context.Background(), sever.UnloadForce); err != nil {
		t.Fatal(err)
	}
	q := newOwnedQueue("vdb", o, blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		t.Error("driver of a gone owner called")
		return nil
	}), 1)
	if err := q.Submit(context.Background(), &blockq.Request{}); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Submit: %v, want ENODEV", err)
	}
}
