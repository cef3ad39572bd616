package kernfs_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

// TestWaitReturnsAtOnceWhenPollReportsHangUp: from the moment a node is
// claimed for removal Poll reports EventErr|EventHup, while the drain may
// still wait for a slow Show; a Wait begun then must report the same at
// once, not sleep until the drain ends (found by sever stress, seed 5).
func TestWaitReturnsAtOnceWhenPollReportsHangUp(t *testing.T) {
	tr, _ := checked(t)
	n, release := slowShow(t, tr, tr.Root(), "slow")
	waiter, _ := tr.OpenNode(n, os.O_RDONLY)
	defer closeOK(t, waiter)
	removed := make(chan error)
	go func() { removed <- tr.Remove(context.Background(), n) }()
	for ev, _ := waiter.Poll(); ev&sever.EventHup == 0; ev, _ = waiter.Poll() {
		time.Sleep(100 * time.Microsecond) // until the removal has claimed the node
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ev, err := waiter.Wait(ctx)
	close(release)
	if ev&sever.EventHup == 0 || !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("Wait while the removal drains a slow Show: %v, %v; want EventErr|EventHup and ENODEV at once", ev, err)
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
}

// slowShow adds attribute name under dir whose Show blocks until release
// is closed, opens it and starts a read: when it returns that Show is
// inside, so a Remove of n claims it and then drains until release. The
// read's result is no test's question; the reader is closed at the end of
// the test. Other reads of n are answered at once.
func slowShow(t *testing.T, tr *kernfs.Tree, dir *kernfs.Node, name string) (n *kernfs.Node, release chan struct{}) {
	t.Helper()
	inShow := make(chan struct{})
	release = make(chan struct{})
	n, err := tr.AddAttr(dir, kernfs.Attr{Name: name, Show: func(c *kernfs.Call, b []byte) ([]byte, error) {
		if c.Context().Value(slowKey{}) != nil {
			close(inShow)
			<-release
		}
		return append(b, "x\n"...), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := tr.OpenNode(n, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOK(t, reader) })
	go func() {
		_, _ = reader.ReadAtContext(context.WithValue(context.Background(), slowKey{}, 1), make([]byte, 8), 0)
	}()
	<-inShow
	return n, release
}

type slowKey struct{}
