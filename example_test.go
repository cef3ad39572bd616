package sever_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// A provider guards its callbacks with an Active; its remover severs it.
// After Sever returns, no callback is running or will run.
func ExampleActive() {
	a := sever.NewActive("cp2112/gpio")
	read := func() error { return a.Do(func() error { fmt.Println("read from hardware"); return nil }) }

	fmt.Println(read())
	// unplug: waits for reads in flight only
	if err := a.Sever(context.Background()); err != nil {
		fmt.Println(err)
	}
	err := read()
	fmt.Println(err, errors.Is(err, syscall.ENODEV))
	// Output:
	// read from hardware
	// <nil>
	// cp2112/gpio: no such device true
}

// An attribute that removes its own device (zram's reset, SCSI's delete)
// severs from inside its own access without deadlock.
func ExampleActive_SeverSelf() {
	a := sever.NewActive("zram0/reset")
	tok, _ := a.Enter()
	won, err := a.SeverSelf(context.Background(), &tok)
	a.Exit(&tok)
	fmt.Println(won, err)
	// Output: true <nil>
}

func ExampleRevocable() {
	type adapter struct{ bus string }
	r := sever.NewRevocable("i2c-3", &adapter{bus: "i2c-3"}, func(*adapter) { fmt.Println("adapter freed") })

	if err := r.Access(func(a *adapter) error { fmt.Println("transfer on", a.bus); return nil }); err != nil {
		fmt.Println(err)
	}
	if _, err := r.Revoke(context.Background()); err != nil {
		fmt.Println(err)
	}
	err := r.Access(func(*adapter) error { return nil })
	fmt.Println(errors.Is(err, sever.ErrNoDevice))
	// Output:
	// transfer on i2c-3
	// adapter freed
	// true
}

// A poller sleeps on the shell's queue; unplugging the provider wakes it
// with ERR|HUP instead of leaving it asleep on freed memory.
func ExampleWaitQueue() {
	q := sever.NewWaitQueue("gpiochip0 line 3")
	seq := q.Seq()
	done := make(chan struct{})
	go func() {
		ev, _, err := q.Wait(context.Background(), seq)
		fmt.Println(ev, err)
		close(done)
	}()
	q.Sever()
	<-done
	// Output: ERR|HUP gpiochip0 line 3: no such device
}

func ExampleOwner() {
	var log check.Log
	mod := sever.NewOwner("scsi_mod", func() { fmt.Println("scsi_mod exit") }, sever.WithLog(&log))
	attr := sever.NewActive("sda/delete")
	if _, err := mod.OnUnload("sda attributes", func(ctx context.Context) error { return attr.Sever(ctx) }); err != nil {
		fmt.Println(err)
	}

	mod.Get("open /sys/block/sda/device/delete")
	fmt.Println(mod.Unload(context.Background(), sever.UnloadTry))
	mod.Put("open /sys/block/sda/device/delete")
	fmt.Println(mod.Unload(context.Background(), sever.UnloadForce))
	mod.Call("scsi_target_reap", func() {}) // too late: recorded, not made
	fmt.Println(log.Summary())
	// Output:
	// scsi_mod: 1 users: device or resource busy
	// scsi_mod exit
	// <nil>
	// map[call into gone owner:1]
}

func ExampleRef() {
	shell := sever.NewRef("gpiochip0 open file", func() { fmt.Println("shell freed") })
	shell.Get("poll")
	shell.Put(nil) // the opener closes
	fmt.Println("still held by", shell.Count(), "holder")
	shell.Put("poll") // the poller leaves: last put frees
	// Output:
	// still held by 1 holder
	// shell freed
}

// Misuse of a Token is refused before it changes any count. With WithLog it
// is recorded as check.Misuse; without a log the same call panics.
func ExampleWithLog_misuse() {
	var log check.Log
	a := sever.NewActive("gpiochip0", sever.WithLog(&log))
	t, _ := a.Enter()
	a.Exit(&t)
	a.Exit(&t) // a second Exit: recorded, nothing changes
	fmt.Println(log.Count(check.Misuse), a.Inside())
	fmt.Println(a.Sever(context.Background()))
	// Output:
	// 1 0
	// <nil>
}

// A Sever called from inside its own Do would wait for itself forever; it
// notices within a fraction of a second and says so.
func ExampleActive_Sever_insideDo() {
	a := sever.NewActive("zram0/reset")
	if err := a.Do(func() error {
		err := a.Sever(context.Background())
		fmt.Println(errors.Is(err, syscall.EDEADLK))
		return nil
	}); err != nil {
		fmt.Println(err)
	}
	fmt.Println(a.Err() != nil) // severing began all the same
	// Output:
	// true
	// true
}

// A Sever still waiting after the watchdog's delay says so, once, instead
// of hanging silently: here an access was entered and never exited.
func ExampleWithWatchdog() {
	a := sever.NewActive("usb1/1-1", sever.WithWatchdog(10*time.Millisecond, func(line string) {
		before, _, _ := strings.Cut(line, " has waited")
		fmt.Println(before)
	}))
	a.Enter() // a forgotten Exit
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := a.Sever(ctx)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output:
	// sever: Active "usb1/1-1": Sever
	// true
}
