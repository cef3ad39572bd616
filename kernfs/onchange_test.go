package kernfs_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

// TestOnChangeFiresOnNotify: a file's OnChange runs once, at the node's
// next Notify, and fn may Poll the file.
func TestOnChangeFiresOnNotify(t *testing.T) {
	tr, _ := checked(t)
	n, err := tr.AddAttr(tr.Root(), kernfs.Attr{Name: "value", Show: func(c *kernfs.Call, b []byte) ([]byte, error) {
		return append(b, "1\n"...), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := tr.OpenNode(n, os.O_RDONLY)
	defer closeOK(t, f)
	var ev sever.Events
	var runs atomic.Int32
	cancel := f.OnChange(func() { ev, _ = f.Poll(); runs.Add(1) })
	if ev, _ := f.Poll(); ev != 0 {
		t.Fatalf("Poll before any Notify = %v", ev)
	}
	tr.Notify(n)
	tr.Notify(n)
	if runs.Load() != 1 || ev != sever.EventPri|sever.EventErr {
		t.Fatalf("two Notifies ran OnChange %d times, its Poll saw %v; want once, PRI|ERR", runs.Load(), ev)
	}
	if cancel() {
		t.Fatal("cancel after the callback ran reported true")
	}
	var never atomic.Int32
	if cancel := f.OnChange(func() { never.Add(1) }); !cancel() {
		t.Fatal("cancel of a pending registration reported false")
	}
	tr.Notify(n)
	if never.Load() != 0 {
		t.Fatal("a cancelled OnChange ran")
	}
}

// TestOnChangeFiresAtTheClaim: a Remove of a directory runs the OnChange
// of a file below it at the claim — when Poll starts answering
// EventErr|EventHup — not only when that node's turn in the bottom-up drain
// comes, which here may wait for a slow Show on another node of the
// subtree: the slow node is made last, so the drain, newest first,
// reaches it before the polled file.
func TestOnChangeFiresAtTheClaim(t *testing.T) {
	tr, _ := checked(t)
	for round := range 6 {
		dir, err := tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev"})
		if err != nil {
			t.Fatal(err)
		}
		polled, _ := tr.AddAttr(dir, kernfs.Attr{Name: "polled", Show: func(c *kernfs.Call, b []byte) ([]byte, error) {
			return append(b, "1\n"...), nil
		}})
		poller, err := tr.OpenNode(polled, os.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		sub, _ := tr.AddDir(dir, kernfs.Dir{Name: "sub"})
		_, release := slowShow(t, tr, sub, "slow")
		fired := make(chan sever.Events, 1)
		poller.OnChange(func() {
			ev, _ := poller.Poll() // fn may poll: no lock of the file's is held
			fired <- ev
		})
		removed := make(chan error)
		go func() { removed <- tr.Remove(context.Background(), dir) }()
		select {
		case ev := <-fired:
			if ev != sever.EventErr|sever.EventHup {
				t.Errorf("round %d: Poll from the callback = %v, want ERR|HUP", round, ev)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("round %d: the Remove's claim did not run OnChange while the drain waited for a Show", round)
		}
		close(release)
		if err := <-removed; err != nil {
			t.Fatal(err)
		}
		closeOK(t, poller)
	}
}

// TestWaitAsleepAtTheClaimWakesBeforeTheDrain: a Wait that fell asleep
// before the Remove returns EventErr|EventHup and ENODEV at the claim.
func TestWaitAsleepAtTheClaimWakesBeforeTheDrain(t *testing.T) {
	tr, _ := checked(t)
	n, release := slowShow(t, tr, tr.Root(), "slow")
	waiter, _ := tr.OpenNode(n, os.O_RDONLY)
	defer closeOK(t, waiter)
	type result struct {
		ev  sever.Events
		err error
	}
	woke := make(chan result, 1)
	go func() {
		ev, err := waiter.Wait(context.Background())
		woke <- result{ev, err}
	}()
	time.Sleep(time.Millisecond) // most of the time the waiter is asleep by now
	removed := make(chan error)
	go func() { removed <- tr.Remove(context.Background(), n) }()
	select {
	case r := <-woke:
		if r.ev != sever.EventErr|sever.EventHup || !errors.Is(r.err, sever.ErrNoDevice) {
			t.Errorf("Wait woken by the claim = %v, %v; want ERR|HUP, ENODEV", r.ev, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Wait slept through the claim while the drain waited for a Show")
	}
	close(release)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
}
