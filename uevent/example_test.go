package uevent_test

import (
	"context"
	"fmt"

	"github.com/sever-dev/sever/uevent"
)

func ExampleParse() {
	msg := []byte("add@/devices/virtual/net/tap0\x00ACTION=add\x00DEVPATH=/devices/virtual/net/tap0\x00" +
		"SUBSYSTEM=net\x00INTERFACE=tap0\x00IFINDEX=5\x00SEQNUM=823\x00")
	ev, err := uevent.Parse(msg)
	if err != nil {
		panic(err)
	}
	fmt.Println(ev)
	fmt.Println(ev.Sysname(), ev.Props["IFINDEX"])
	// Output:
	// 823 add /devices/virtual/net/tap0 (net)
	// tap0 5
}

// A consumer keeps a set of the devices present: a resync replaces it,
// an add or remove edits it — idempotently, since the events after a
// resync may repeat what its snapshot showed.
func ExampleWatcher() {
	w, err := uevent.Listen(uevent.Config{})
	if err != nil {
		return // no netlink here
	}
	defer func() { _ = w.Close() }() // the first Close: nil
	present := make(map[string]bool)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // for the example: stop after what is queued now
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			break
		}
		switch ev.Action {
		case uevent.ActionResync:
			clear(present)
			for _, d := range ev.Snapshot {
				present[d.Devpath] = true
			}
		case uevent.ActionAdd:
			present[ev.Devpath] = true
		case uevent.ActionRemove:
			delete(present, ev.Devpath)
		}
	}
	fmt.Println(present["/devices/virtual/net/lo"])
}
