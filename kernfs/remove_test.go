package kernfs_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
)

// Rule: Remove waits for every Show and Store in flight, and none starts
// after it returns.
func TestRemoveDrainsInFlightShowStore(t *testing.T) {
	tr, _ := checked(t)
	var inside, entered, afterRemove atomic.Int64
	var removed atomic.Bool
	gate := make(chan struct{})
	dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev"}))
	enter := func() {
		if removed.Load() {
			afterRemove.Add(1)
		}
		inside.Add(1)
		entered.Add(1)
		<-gate
		time.Sleep(time.Microsecond)
		inside.Add(-1)
	}
	must[*kernfs.Node](t)(tr.AddAttr(dir, kernfs.Attr{
		Name:  "value",
		Show:  func(_ *kernfs.Call, b []byte) ([]byte, error) { enter(); return append(b, "1\n"...), nil },
		Store: func(*kernfs.Call, any) error { enter(); return nil },
	}))
	const G = 100
	var wg sync.WaitGroup
	for i := range G {
		f := must[*kernfs.File](t)(tr.Open("/dev/value", os.O_RDWR))
		wg.Go(func() {
			defer closeOK(t, f)
			buf := make([]byte, 8)
			for {
				var err error
				if i%2 == 0 {
					_, err = f.ReadAt(buf, 0)
				} else {
					_, err = f.Write([]byte("1\n"))
				}
				if err != nil {
					if !errors.Is(err, syscall.ENODEV) {
						t.Errorf("op after Remove: got %v, want ENODEV", err)
					}
					return
				}
			}
		})
	}
	for entered.Load() < G { // let every goroutine get inside once
		time.Sleep(time.Millisecond)
	}
	done := make(chan error)
	go func() { done <- tr.Remove(ctxT(t), dir) }()
	select {
	case err := <-done:
		t.Fatalf("Remove returned (%v) while %d callbacks were inside: it must drain them", err, inside.Load())
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	removed.Store(true)
	if n := inside.Load(); n != 0 {
		t.Errorf("Remove returned with %d callbacks still inside", n)
	}
	wg.Wait()
	if n := afterRemove.Load(); n != 0 {
		t.Errorf("%d callbacks entered after Remove returned", n)
	}
}

// Rule: Remove never waits for open files; it runs Release for each, and
// every later operation on them fails with ENODEV without calling the
// provider. Close afterwards calls nothing.
func TestRemoveReleasesOpenFilesWithoutWaitingForClose(t *testing.T) {
	tr, _ := checked(t)
	c := &counter{}
	dir, _ := device(t, tr, "usb1", nil, c)
	var files []*kernfs.File
	for range 10 {
		files = append(files, must[*kernfs.File](t)(tr.Open("/devices/usb1/value", os.O_RDWR)))
	}
	if got := readAll(t, files[0]); got != "0" {
		t.Fatalf("read %q, want 0", got)
	}
	if err := tr.Remove(ctxT(t), dir); err != nil {
		t.Fatalf("Remove with open files: %v", err)
	}
	c.severed.Store(true)
	c.checkReleases(t)
	for _, f := range files {
		_, err := f.Read(make([]byte, 4))
		if !errors.Is(err, syscall.ENODEV) || !errors.Is(err, sever.ErrNoDevice) {
			t.Errorf("Read after Remove: %v, want ENODEV", err)
		}
		if _, err := f.Write([]byte("3")); !errors.Is(err, syscall.ENODEV) {
			t.Errorf("Write after Remove: %v, want ENODEV", err)
		}
		if _, err := f.Seek(0, 0); !errors.Is(err, syscall.ENODEV) {
			t.Errorf("Seek after Remove: %v, want ENODEV", err)
		}
		if ev, err := f.Poll(); ev != sever.EventErr|sever.EventHup || !errors.Is(err, syscall.ENODEV) {
			t.Errorf("Poll after Remove: %v, %v; want ERR|HUP, ENODEV", ev, err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("Close after Remove: %v", err)
		}
		if err := f.Close(); !errors.Is(err, syscall.EBADF) {
			t.Errorf("second Close: %v, want EBADF", err)
		}
	}
	c.checkReleases(t)
	if n := c.late.Load(); n != 0 {
		t.Errorf("provider called %d times after Remove returned", n)
	}
	if _, err := tr.Open("/devices/usb1/value", os.O_RDONLY); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Open of removed path: %v, want ENOENT", err)
	}
}

// Rule: Release runs exactly once per open under racing Close and Remove.
func TestReleaseExactlyOnceUnderRacingCloseAndRemove(t *testing.T) {
	tr, log := checked(t)
	for round := range 50 {
		c := &counter{}
		dir, val := device(t, tr, "d", nil, c)
		var files []*kernfs.File
		for range 20 {
			files = append(files, must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDONLY)))
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, f := range files {
			wg.Go(func() {
				<-start
				if err := f.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Go(func() {
			<-start
			if err := tr.Remove(ctxT(t), dir); err != nil {
				t.Errorf("Remove: %v", err)
			}
		})
		close(start)
		wg.Wait()
		if got := c.opens.Load(); got != 20 {
			t.Fatalf("round %d: %d opens", round, got)
		}
		c.checkReleases(t)
		if !log.Clean() {
			t.Fatalf("round %d: checker: %v", round, log.Violations())
		}
	}
}

// Rule: a poller asleep before Remove wakes with ERR|HUP and ENODEV.
func TestPollerBlockedBeforeRemoveWakesWithErrHup(t *testing.T) {
	tr, _ := checked(t)
	c := &counter{}
	dir, val := device(t, tr, "psi", nil, c)
	f := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDONLY))
	defer closeOK(t, f)
	readAll(t, f)
	type result struct {
		ev  sever.Events
		err error
	}
	woke := make(chan result)
	asleep := make(chan struct{})
	go func() {
		close(asleep)
		ev, err := f.Wait(ctxT(t))
		woke <- result{ev, err}
	}()
	<-asleep
	time.Sleep(10 * time.Millisecond)
	select {
	case r := <-woke:
		t.Fatalf("Wait returned before anything happened: %v %v", r.ev, r.err)
	default:
	}
	if err := tr.Remove(ctxT(t), dir); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-woke:
		if r.ev != sever.EventErr|sever.EventHup || !errors.Is(r.err, syscall.ENODEV) {
			t.Errorf("poller woke with %v, %v; want ERR|HUP and ENODEV", r.ev, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("poller asleep before Remove was not woken by it")
	}
}

// Rule: Notify wakes pollers with PRI|ERR; a read at offset 0 sees fresh
// content and re-arms the poll.
func TestNotifyWakesPollerAndSeekToZeroReadsFreshContent(t *testing.T) {
	tr, _ := checked(t)
	c := &counter{}
	_, val := device(t, tr, "gpio", nil, c)
	f := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDONLY))
	defer closeOK(t, f)
	if got := readAll(t, f); got != "0" {
		t.Fatalf("got %q", got)
	}
	if ev, err := f.Poll(); ev != 0 || err != nil {
		t.Fatalf("Poll before Notify: %v %v, want nothing", ev, err)
	}
	woke := make(chan sever.Events)
	go func() {
		ev, err := f.Wait(ctxT(t))
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		woke <- ev
	}()
	time.Sleep(5 * time.Millisecond)
	c.mu.Lock()
	c.v = 7
	c.mu.Unlock()
	tr.Notify(val)
	if ev := <-woke; ev != sever.EventPri|sever.EventErr {
		t.Errorf("woke with %v, want PRI|ERR (sysfs_notify)", ev)
	}
	if got := readAll(t, f); got != "7" {
		t.Errorf("read after seek to 0: %q, want fresh content 7", got)
	}
	if ev, _ := f.Poll(); ev != 0 {
		t.Errorf("Poll after re-reading: %v, want nothing until the next Notify", ev)
	}
}

// Rule: a Store may remove its own device without deadlock; of racing
// self-removers and plain Removes exactly one wins.
func TestRemoveSelfFromStoreRemovesWholeDeviceWithoutDeadlock(t *testing.T) {
	tr, _ := checked(t)
	c := &counter{}
	dir, _ := device(t, tr, "sda", nil, c)
	var won atomic.Int32
	must[*kernfs.Node](t)(tr.AddAttr(dir, kernfs.Attr{
		Name:  "delete",
		Parse: kernfs.Bool(),
		Store: func(call *kernfs.Call, v any) error {
			w, err := call.RemoveSelf(context.Background(), call.Node().Parent())
			if w {
				won.Add(1)
			}
			return err
		},
	}))
	other := must[*kernfs.File](t)(tr.Open("/devices/sda/value", os.O_RDONLY))
	f := must[*kernfs.File](t)(tr.Open("/devices/sda/delete", os.O_WRONLY))
	if _, err := f.Write([]byte("1\n")); err != nil {
		t.Fatalf("write to delete: %v", err)
	}
	if won.Load() != 1 {
		t.Errorf("RemoveSelf without a rival did not win")
	}
	if _, err := tr.Lookup("/devices/sda"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("device still there after self-removal: %v", err)
	}
	if _, err := other.Read(make([]byte, 4)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("sibling attribute after self-removal: %v, want ENODEV", err)
	}
	if _, err := f.Write([]byte("1")); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("delete after self-removal: %v, want ENODEV", err)
	}
	closeOK(t, other)
	closeOK(t, f)
	c.checkReleases(t)
}

func TestRemoveSelfRacingRemoveSelfAndRemoveExactlyOneWins(t *testing.T) {
	tr, _ := checked(t)
	for round := range 100 {
		dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "host"}))
		var wins, losses atomic.Int32
		ready := make(chan struct{})
		var arrived sync.WaitGroup
		arrived.Add(2)
		for _, name := range []string{"delete", "reset"} {
			must[*kernfs.Node](t)(tr.AddAttr(dir, kernfs.Attr{
				Name: name,
				Store: func(call *kernfs.Call, v any) error {
					arrived.Done()
					<-ready // both self-removers are inside before either removes
					w, err := call.RemoveSelf(ctxT(t), call.Node().Parent())
					if w {
						wins.Add(1)
					} else {
						losses.Add(1)
					}
					return err
				},
			}))
		}
		var wg sync.WaitGroup
		for _, name := range []string{"delete", "reset"} {
			f := must[*kernfs.File](t)(tr.Open("/host/"+name, os.O_WRONLY))
			wg.Go(func() {
				defer closeOK(t, f)
				if _, err := f.Write([]byte("1")); err != nil {
					t.Errorf("self-remover: %v", err)
				}
			})
		}
		arrived.Wait()
		withPlain := round%2 == 1
		if withPlain {
			// A plain Remove claims the device first, then waits in the
			// drain for the self-removers, which must lose and must not
			// deadlock it.
			wg.Go(func() {
				if err := tr.Remove(ctxT(t), dir); err != nil {
					t.Errorf("Remove: %v", err)
				}
			})
			for !dir.Removed() {
				time.Sleep(10 * time.Microsecond)
			}
		}
		close(ready)
		wg.Wait()
		want := int32(1)
		if withPlain {
			want = 0
		}
		if wins.Load() != want || wins.Load()+losses.Load() != 2 {
			t.Fatalf("round %d (plain Remove first: %v): %d self-removers won, %d lost; want %d won",
				round, withPlain, wins.Load(), losses.Load(), want)
		}
		if _, err := tr.Lookup("/host"); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("round %d: /host survived: %v", round, err)
		}
	}
}

// Rule: Remove of a node already removed is a no-op, and a Remove racing
// with another of an overlapping subtree returns only once it is removed.
func TestConcurrentRemovesOfOverlappingSubtreesAllFinish(t *testing.T) {
	tr, _ := checked(t)
	c := &counter{}
	dir, val := device(t, tr, "x", nil, c)
	f := must[*kernfs.File](t)(tr.OpenNode(val, os.O_RDONLY))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			n := dir
			if i%2 == 0 {
				n = val
			}
			if err := tr.Remove(ctxT(t), n); err != nil {
				t.Error(err)
			}
			if !n.Removed() {
				t.Errorf("Remove of %s returned before it was removed", n)
			}
		})
	}
	wg.Wait()
	c.checkReleases(t)
	closeOK(t, f)
	if err := tr.Remove(ctxT(t), dir); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// Rule: a Remove whose drain misses its deadline says who is inside, and a
// later Remove finishes the job.
func TestRemovePastDeadlineReportsAndCanBeResumed(t *testing.T) {
	tr, log := checkedAllowing(t, check.SeverTimeout)
	gate := make(chan struct{})
	entered := make(chan struct{})
	dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "slow"}))
	must[*kernfs.Node](t)(tr.AddAttr(dir, kernfs.Attr{
		Name: "value",
		Show: func(_ *kernfs.Call, b []byte) ([]byte, error) { close(entered); <-gate; return b, nil },
	}))
	f := must[*kernfs.File](t)(tr.Open("/slow/value", os.O_RDONLY))
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		// The stuck read is what makes Remove miss its deadline; its own
		// result is not this test's question.
		_, _ = f.Read(make([]byte, 1))
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := tr.Remove(ctx, dir)
	var he *sever.HoldersError
	if !errors.As(err, &he) || he.Held != 1 {
		t.Fatalf("Remove past deadline: %v, want a HoldersError naming 1 holder", err)
	}
	if n := log.Count(check.SeverTimeout); n != 1 {
		t.Errorf("checker recorded %d sever-past-deadline, want 1", n)
	}
	if _, err := tr.Open("/slow/value", os.O_RDONLY); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Open during an unfinished Remove: %v, want ENOENT", err)
	}
	close(gate)
	<-readDone
	if err := tr.Remove(ctxT(t), dir); err != nil {
		t.Fatalf("resumed Remove: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
}

// Rule: a removed subtree is garbage once nothing outside refers to it. A
// file left open on one removed attribute keeps that node (and so its
// directory) reachable, but not the directory's other children: the
// directory lets go of them when it is removed.
func TestOpenFileOfRemovedNodeKeepsNotItsSiblings(t *testing.T) {
	tr, _ := checked(t)
	dir := must[*kernfs.Node](t)(tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev"}))
	const n = 100
	var collected atomic.Int64
	for i := range n {
		a := must[*kernfs.Node](t)(tr.AddAttr(dir, kernfs.Attr{Name: "a" + string(rune('0'+i/10)) + string(rune('0'+i%10)), Show: showValue}))
		runtime.AddCleanup(a, func(c *atomic.Int64) { c.Add(1) }, &collected)
	}
	f, err := tr.Open("/dev/a00", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Remove(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	dir = nil
	for range 50 {
		if collected.Load() == n-1 {
			break
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if got := collected.Load(); got != n-1 {
		t.Errorf("%d of the %d attributes not held by the open file were collected after their directory's removal, want all", got, n-1)
	}
	runtime.KeepAlive(f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Rule: a callback that waits on its Call's WaitContext is released by the
// node's removal — the removal waits for no blocked callback — and the
// operation it served returns ENODEV. Both for an operation with a
// context of its own (ReadAtContext, merged with the removal's) and
// without (Read).
func TestRemovalCancelsTheContextOfBlockedCallbacks(t *testing.T) {
	for _, withCtx := range []bool{false, true} {
		tr, _ := checked(t)
		entered := make(chan struct{}, 1)
		var cause error
		n := must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{Name: "slow", Show: func(c *kernfs.Call, buf []byte) ([]byte, error) {
			entered <- struct{}{}
			<-c.WaitContext().Done() // waits for hardware that never answers
			cause = context.Cause(c.WaitContext())
			return nil, c.WaitContext().Err()
		}}))
		f := must[*kernfs.File](t)(tr.Open("/slow", os.O_RDONLY))
		readErr := make(chan error, 1)
		go func() {
			var err error
			if withCtx {
				rctx, cancel := context.WithCancel(context.Background()) // can end, but does not
				defer cancel()
				_, err = f.ReadAtContext(rctx, make([]byte, 8), 0)
			} else {
				_, err = f.Read(make([]byte, 8))
			}
			readErr <- err
		}()
		<-entered
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := tr.Remove(ctx, n); err != nil {
			t.Fatalf("with a context of its own %v: Remove waited for the blocked Show: %v", withCtx, err)
		}
		cancel()
		if err := <-readErr; !errors.Is(err, syscall.ENODEV) {
			t.Errorf("with a context of its own %v: the read a removal cut short returned %v, want ENODEV", withCtx, err)
		}
		if !errors.Is(cause, syscall.ENODEV) {
			t.Errorf("with a context of its own %v: the Context's cause was %v, want the node's ENODEV", withCtx, cause)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Rule: an operation's own context still cancels its callback's WaitContext,
// and the operation returns the callback's error (EINTR on a mount), not
// ENODEV: the node is not gone.
func TestOperationContextStillCancelsTheCallback(t *testing.T) {
	tr, _ := checked(t)
	must[*kernfs.Node](t)(tr.AddAttr(tr.Root(), kernfs.Attr{Name: "slow", Show: func(c *kernfs.Call, buf []byte) ([]byte, error) {
		<-c.WaitContext().Done()
		return nil, c.WaitContext().Err()
	}}))
	f := must[*kernfs.File](t)(tr.Open("/slow", os.O_RDONLY))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.ReadAtContext(ctx, make([]byte, 8), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a read whose own context ended returned %v, want its deadline error", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
