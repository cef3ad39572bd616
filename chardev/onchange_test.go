package chardev_test

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
)

// TestOnChangeFiresOnNotifyAndAtTheStartOfUnregister: a File's OnChange
// runs at the driver's Notify, and at Unregister as soon as Poll answers
// EventErr|EventHup — while a driver Read is still inside and the drain
// waits for it — not after the drain.
func TestOnChangeFiresOnNotifyAndAtTheStartOfUnregister(t *testing.T) {
	m := newMachine(t)
	inRead, leave := make(chan struct{}), make(chan struct{})
	cd := m.register(chardev.Config{Name: "ring0", Ops: chardev.Ops{
		Read: func(c *chardev.Call, b []byte) (int, error) {
			close(inRead)
			<-leave
			return 0, nil
		},
		Poll: func(c *chardev.Call) sever.Events { return 0 },
	}})
	reader := m.open(cd, os.O_RDONLY)
	poller := m.open(cd, os.O_RDONLY)

	var runs atomic.Int32
	cancel := poller.OnChange(func() { runs.Add(1) })
	cd.Notify(sever.EventIn)
	cd.Notify(sever.EventIn)
	if runs.Load() != 1 || cancel() {
		t.Fatalf("two Notifies ran OnChange %d times; want once, and cancel afterwards false", runs.Load())
	}

	go func() { _, _ = reader.Read(make([]byte, 1)) }()
	<-inRead
	fired := make(chan sever.Events, 1)
	poller.OnChange(func() {
		ev, _ := poller.Poll() // no driver code: the device is unregistering
		fired <- ev
	})
	done := make(chan error)
	go func() { done <- cd.Unregister(context.Background()) }()
	select {
	case ev := <-fired:
		if ev != sever.EventErr|sever.EventHup {
			t.Errorf("Poll from the callback = %v, want ERR|HUP", ev)
		}
	case <-time.After(5 * time.Second):
		t.Error("Unregister did not run OnChange while it drained a driver Read")
	}
	close(leave)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	closeOK(t, reader)
	closeOK(t, poller)
	m.clean()
}
