package device_test

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/device"
)

func TestUeventsAreOrderedAddBindChangeUnbindRemove(t *testing.T) {
	m := newMachine(t)
	sub := m.core.Subscribe(16)
	defer sub.Close()
	m.driver(&device.Driver{Name: "u", IDs: []string{"u"}})
	dev := m.register("u0", nil, "u")
	dev.Notify(map[string]string{"EVENT": "reset"})
	unregisterOK(t, dev)

	var got []string
	var last uint64
	for {
		e, ok := sub.TryNext()
		if !ok {
			break
		}
		if e.Seq <= last {
			t.Errorf("sequence numbers not increasing: %d after %d", e.Seq, last)
		}
		last = e.Seq
		if e.Env["SEQNUM"] != fmt.Sprint(e.Seq) || e.Env["DEVPATH"] != "/devices/u0" || e.Subsystem != "platform" {
			t.Errorf("event %v has env %v", e, e.Env)
		}
		got = append(got, e.Action.String())
	}
	if want := []string{"add", "bind", "change", "unbind", "remove"}; !slices.Equal(got, want) {
		t.Errorf("uevents %q, want %q", got, want)
	}
	m.clean()
}

func TestSlowUeventSubscriberNeverBlocksRemovalAndIsToldItMissed(t *testing.T) {
	m := newMachine(t)
	slow := m.core.Subscribe(2) // never read during the removals
	defer slow.Close()
	var devs []*device.Device
	for i := range 10 {
		devs = append(devs, m.register(fmt.Sprint("d", i), nil, ""))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, d := range devs {
			unregisterOK(t, d)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("removal blocked on a subscriber that does not read")
	}
	e1, _ := slow.TryNext()
	e2, _ := slow.TryNext()
	if e1.Missed != 0 || e2.Missed != 0 {
		t.Errorf("the first buffered events claim losses: %v, %v", e1, e2)
	}
	if slow.Missed() != 18 {
		t.Errorf("subscriber missed %d events, want 18 (20 emitted, 2 buffered)", slow.Missed())
	}
	unregisterOK(t, m.register("late", nil, ""))
	e3, _ := slow.TryNext()
	if e3.Missed != 18 || e3.Seq != e2.Seq+19 {
		t.Errorf("next event after the overflow: %v, want Missed 18 and a Seq gap of 19", e3)
	}
	slow.Close()
	if e, err := slow.Next(ctxT(t)); err != nil || e.Action != device.ActionRemove {
		t.Errorf("Next after Close with one event buffered: %v, %v; want the buffered remove", e, err)
	}
	if _, err := slow.Next(ctxT(t)); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Next after Close with nothing buffered: %v, want EBADF", err)
	}
	m.clean()
}
