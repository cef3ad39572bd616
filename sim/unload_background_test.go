package sim_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/sim"
)

// Rule: an rmmod whose context ends while a call of the module is still in
// flight does not strand the module half-gone: it says the unload goes on
// (EINPROGRESS), and when the call returns the module is gone and its
// /module directory with it.
func TestRmmodWhoseContextEndsFinishesInTheBackground(t *testing.T) {
	m := sim.New(t.Name())
	o, err := m.Insmod("slow_mod", nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Get("call in flight")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := m.Rmmod(ctx, "slow_mod"); !errors.Is(err, syscall.EINPROGRESS) || !errors.Is(err, sever.ErrUnloadInBackground) {
		t.Fatalf("rmmod with a call in flight past its deadline = %v, want EINPROGRESS", err)
	}
	if _, err := m.Sysfs().Lookup("/module/slow_mod"); err != nil {
		t.Fatalf("the directory of a module still unloading: %v, want it still there", err)
	}
	o.Put("call in flight")
	<-o.Gone()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := m.Sysfs().Lookup("/module/slow_mod")
		if errors.Is(err, syscall.ENOENT) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/module/slow_mod after the background unload: %v, want ENOENT", err)
		}
		time.Sleep(time.Millisecond)
	}
	if vs, err := m.Quiesce(context.Background()); err != nil || len(vs) != 0 {
		t.Errorf("quiesce: %v, violations %v", err, vs)
	}
}
