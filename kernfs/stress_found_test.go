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
	inShow, release := make(chan struct{}), make(chan struct{})
	n, err := tr.AddAttr(tr.Root(), kernfs.Attr{Name: "slow", Show: func(c *kernfs.Call, b []byte) ([]byte, error) {
		if c.Context().Value(slowKey{}) != nil {
			close(inShow)
			<-release
		}
		return append(b, "x\n"...), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	reader, _ := tr.OpenNode(n, os.O_RDONLY)
	waiter, _ := tr.OpenNode(n, os.O_RDONLY)
	defer closeOK(t, reader)
	defer closeOK(t, waiter)
	// The reader only keeps the removal draining; its result is not this
	// test's question.
	go func() {
		_, _ = reader.ReadAtContext(context.WithValue(context.Background(), slowKey{}, 1), make([]byte, 8), 0)
	}()
	<-inShow
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

type slowKey struct{}
