package uevent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopDevice makes a new loop device through /dev/loop-control — a real
// block device with real add and remove uevents — and returns its number
// and a function removing it. It skips the test where the kernel refuses.
func loopDevice(t *testing.T) (int, func() error) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("cannot make loop devices (needs root and the loop module): %v", err)
	}
	defer func() { _ = ctl.Close() }() // only ioctls went through it: nothing to lose
	for range 100 {
		// A number far from the ones losetup hands out, so that tests of
		// other packages making loop devices at the same time do not meet it.
		n := 1000 + rand.IntN(100000)
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(n))
		if errno == unix.EEXIST {
			continue
		}
		if errno != 0 {
			t.Skipf("LOOP_CTL_ADD refused: %v", errno)
		}
		idx := int(r)
		remove := func() error {
			c, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer func() { _ = c.Close() }() // as ctl
			_, _, errno := unix.Syscall(unix.SYS_IOCTL, c.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx))
			if errno != 0 {
				return errno
			}
			return nil
		}
		return idx, remove
	}
	t.Skip("no free loop device number")
	return 0, nil
}

// next returns the next event for which keep is true, failing the test
// after 5 s.
func next(t *testing.T, w *Watcher, keep func(Event) bool) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for an event: %v", err)
		}
		if keep(ev) {
			return ev
		}
	}
}

func TestWatcherStartsWithSnapshot(t *testing.T) {
	w, err := Listen(Config{})
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	ev, err := w.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != ActionResync || ev.Reason != ReasonStart || len(ev.Snapshot) == 0 {
		t.Fatalf("first event %v, want a resync (start) listing the devices present", ev)
	}
}

func TestWatcherSeesLoopDeviceAddAndRemove(t *testing.T) {
	w, err := Listen(Config{})
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if ev, _ := w.Next(context.Background()); ev.Reason != ReasonStart {
		t.Fatalf("first event %v", ev)
	}
	idx, remove := loopDevice(t)
	devpath := fmt.Sprintf("/devices/virtual/block/loop%d", idx)
	add := next(t, w, func(ev Event) bool { return ev.Devpath == devpath && ev.Action != ActionResync })
	if add.Action != ActionAdd || add.Subsystem != "block" || add.Devname != fmt.Sprintf("loop%d", idx) || add.Seqnum == 0 || add.Coldplug {
		t.Fatalf("add of loop%d arrived as %+v", idx, add)
	}
	if err := remove(); err != nil {
		t.Fatalf("LOOP_CTL_REMOVE: %v", err)
	}
	rm := next(t, w, func(ev Event) bool { return ev.Devpath == devpath })
	if rm.Action != ActionRemove || rm.Seqnum <= add.Seqnum {
		t.Fatalf("after %v came %v, want its remove with a later seqnum", add, rm)
	}
}

func TestWatcherOverflowResyncsInsteadOfLosing(t *testing.T) {
	w, err := Listen(Config{QueueLen: 2})
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if ev, _ := w.Next(context.Background()); ev.Reason != ReasonStart {
		t.Fatalf("first event %v", ev)
	}
	// Three loop devices make at least six events; nobody reads them.
	var idxs []int
	for range 3 {
		idx, remove := loopDevice(t)
		idxs = append(idxs, idx)
		defer func() {
			if err := remove(); err != nil {
				t.Errorf("LOOP_CTL_REMOVE: %v", err)
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		owed := w.resync
		w.mu.Unlock()
		if owed != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reader never noticed its queue overflow")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ev, err := w.Next(context.Background())
	if err != nil || ev.Action != ActionResync || ev.Reason != ReasonOverflow {
		t.Fatalf("after an overflow Next = %v, %v; want a resync (overflow)", ev, err)
	}
	for _, idx := range idxs {
		want := fmt.Sprintf("/devices/virtual/block/loop%d", idx)
		found := false
		for _, d := range ev.Snapshot {
			found = found || d.Devpath == want
		}
		if !found {
			t.Errorf("the resync's snapshot lacks %s, added while the consumer slept", want)
		}
	}
}

func TestWatcherENOBUFSResyncs(t *testing.T) {
	first := true
	w, err := listen(Config{}, func(recv func([]byte) (int, error)) func([]byte) (int, error) {
		return func(buf []byte) (int, error) {
			if first {
				first = false
				return 0, unix.ENOBUFS
			}
			return recv(buf)
		}
	})
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	ev := next(t, w, func(ev Event) bool { return ev.Action == ActionResync && ev.Reason != ReasonStart })
	if ev.Reason != ReasonENOBUFS || len(ev.Snapshot) == 0 {
		t.Fatalf("after the kernel's ENOBUFS the consumer got %v, want a resync (enobufs) with a snapshot", ev)
	}
}

func TestWatcherCloseWakesNext(t *testing.T) {
	w, err := Listen(Config{})
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	// the start snapshot
	if _, err := w.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := w.Next(context.Background()); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(10 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, syscall.EBADF) {
			t.Fatalf("Next woken by Close returned %v, want EBADF", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not wake a Next blocked in another goroutine")
	}
	if err := w.Close(); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("second Close = %v, want EBADF", err)
	}
}

func TestListenRefusesNegativeSizes(t *testing.T) {
	if _, err := Listen(Config{QueueLen: -1}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Listen with QueueLen -1 = %v, want EINVAL", err)
	}
}

// The kernel's own ENOBUFS: the reader is held back while loop devices
// come and go, the socket's buffer (made as small as the kernel allows)
// overflows, the kernel drops events and says so on the next receive.
func TestWatcherKernelENOBUFSResyncs(t *testing.T) {
	hold := make(chan struct{})
	held := false
	w, err := listen(Config{RcvBuf: 1}, func(recv func([]byte) (int, error)) func([]byte) (int, error) {
		return func(buf []byte) (int, error) {
			if !held {
				held = true
				<-hold
			}
			return recv(buf)
		}
	})
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if ev, _ := w.Next(context.Background()); ev.Reason != ReasonStart {
		t.Fatalf("first event %v", ev)
	}
	for range 10 {
		_, remove := loopDevice(t)
		if err := remove(); err != nil {
			t.Fatalf("LOOP_CTL_REMOVE: %v", err)
		}
	}
	close(hold)
	ev := next(t, w, func(ev Event) bool { return ev.Action == ActionResync })
	if ev.Reason != ReasonENOBUFS {
		t.Fatalf("after the kernel dropped events the consumer got %v, want a resync (enobufs)", ev)
	}
}
