package drvhost_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
)

// A provider in a child process: its device is called through a handle
// like a local one; kill -9 of the process turns the handle into a shell,
// and the supervisor starts a new generation.
func ExampleSupervisor() {
	ctx := context.Background()
	core := device.NewCore("pc", new(check.Log))
	sup, _ := drvhost.New(core, drvhost.Config{
		Name:    "w",
		Command: []string{os.Args[0], "-test.run=^$"}, // this example's binary is also its host
		Env:     []string{testHostEnv + "=1"},
		Policy:  drvhost.RestartOnFailure,
	})
	if err := sup.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		if err := errors.Join(sup.Stop(ctx), core.Shutdown(ctx)); err != nil {
			fmt.Println(err)
		}
	}()

	p, _ := sup.Provider("widget")
	h, _ := p.Open("example")
	defer func() {
		if err := h.Close(); err != nil { // a shell's Close succeeds too
			fmt.Println(err)
		}
	}()
	echo := func() error {
		return h.Do(func(s drvhost.Service) error {
			out, err := s.Call(ctx, "echo", []byte("hello from the host"))
			fmt.Println(string(out))
			return err
		})
	}
	if err := echo(); err != nil {
		fmt.Println(err)
	}

	if _, err := sup.Kill(); err != nil { // kill -9
		fmt.Println(err)
	}
	gen, _ := sup.WaitRunning(ctx, 1)
	err := echo()
	fmt.Println("old handle:", errors.Is(err, syscall.ENODEV), "- now generation", gen)
	// Output:
	// hello from the host
	// old handle: true - now generation 2
}

// A device the host removes while it lives on leaves the machine too: the
// handle on it becomes a shell, and the host's other devices go on.
func ExampleExport() {
	ctx := context.Background()
	core := device.NewCore("pc", new(check.Log))
	sup, _ := drvhost.New(core, drvhost.Config{
		Name:    "w",
		Command: []string{os.Args[0], "-test.run=^$"}, // this example's binary is also its host
		Env:     []string{testHostEnv + "=1"},
	})
	if err := sup.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		if err := errors.Join(sup.Stop(ctx), core.Shutdown(ctx)); err != nil {
			fmt.Println(err)
		}
	}()
	call := func(h *device.Handle[drvhost.Service], method string) error {
		return h.Do(func(s drvhost.Service) error {
			_, err := s.Call(ctx, method, nil)
			return err
		})
	}
	open := func(dev string) *device.Handle[drvhost.Service] {
		p, _ := sup.Provider(dev)
		h, _ := p.Open("example")
		return h
	}
	widget, gadget := open("widget"), open("gadget")
	defer func() {
		if err := errors.Join(widget.Close(), gadget.Close()); err != nil {
			fmt.Println(err)
		}
	}()
	removed := sup.Device("widget").Removed()

	// The host's own code unregisters its widget (the test host's
	// gadget.unplug does).
	if err := call(gadget, "unplug"); err != nil {
		fmt.Println(err)
	}
	<-removed
	fmt.Println("widget:", errors.Is(call(widget, "echo"), syscall.ENODEV))
	fmt.Println("gadget:", call(gadget, "echo"), "- host", sup.Status().State)
	// Output:
	// widget: true
	// gadget: <nil> - host running
}
