package psi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/psi"
)

func setup(t *testing.T, bugs psi.Bugs) (*sim.Machine, *psi.Hierarchy, *psi.Group, *psi.Watcher) {
	t.Helper()
	m := sim.New(t.Name())
	h, err := psi.Mount(m, bugs)
	if err != nil {
		t.Fatal(err)
	}
	g, err := h.Mkdir("a")
	if err != nil {
		t.Fatal(err)
	}
	w, err := h.Watch(g.Path()+"/cpu.pressure", "some 100000 1000000")
	if err != nil {
		t.Fatal(err)
	}
	return m, h, g, w
}

func TestTriggerFiresAndRmdirWakesThePoller(t *testing.T) {
	m, h, g, w := setup(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.Stall(150 * time.Millisecond)
	if ev, err := w.Poll(ctx); err != nil || ev&sever.EventPri == 0 {
		t.Fatalf("poll after a stall over the threshold: %v, %v", ev, err)
	}
	woke := make(chan error, 1)
	go func() {
		ev, err := w.Poll(ctx)
		if err == nil && ev&sever.EventHup == 0 {
			err = errors.New("woke without EventHup")
		}
		woke <- err
	}()
	if err := h.Rmdir(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("poller across rmdir: %v, want ENODEV", err)
	}
	closeOK(t, w)
	if vs, err := m.Quiesce(ctx); len(vs) != 0 || err != nil {
		t.Errorf("quiesce: %v, %v", vs, err)
	}
}

func TestNaiveTriggerFreesTheQueueUnderItsPoller(t *testing.T) {
	m, h, _, w := setup(t, psi.BugTriggerOwnsQueue)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Rmdir(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	// Polls the queue the trigger's release freed: whatever it returns,
	// the verdict is the checker's.
	_, _ = w.Poll(ctx)
	_ = w.Close()
	_, _ = m.Quiesce(ctx)
	if m.Log().Count(check.UseAfterFree) == 0 {
		t.Errorf("naive trigger: %v; want a use after free", m.Log().Summary())
	}
}

// closeOK closes c and fails the test if Close does: a file's first Close
// succeeds, whether or not its device is gone.
func closeOK(t testing.TB, c interface{ Close() error }) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
