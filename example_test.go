package sever_test

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// A provider guards its callbacks with an Active; its remover severs it.
// After Sever returns, no callback is running or will run.
func ExampleActive() {
	a := sever.NewActive("cp2112/gpio")
	read := func() error { return a.Do(func() error { fmt.Println("read from hardware"); return nil }) }

	fmt.Println(read())
	a.Sever(context.Background()) // unplug: waits for reads in flight only
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

	r.Access(func(a *adapter) error { fmt.Println("transfer on", a.bus); return nil })
	r.Revoke(context.Background())
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
	mod.OnUnload("sda attributes", func(ctx context.Context) error { return attr.Sever(ctx) })

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
