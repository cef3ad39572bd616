package cp2112_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/subsys/gpio"
	"github.com/sever-dev/sever/subsys/usb"
)

// A process watches a line through dev/gpiochip0; the board is unplugged
// under it and its read fails with ENODEV.
func Example() {
	ctx := context.Background()
	m := sim.New("example")
	mod, _ := m.Insmod("cp2112", nil)
	if _, err := cp2112.Register(ctx, m, mod, 0); err != nil {
		fmt.Println(err)
		return
	}
	host, _ := usb.NewHost(ctx, m.Core(), "usb1", 1)
	hw := cp2112.NewHardware("cp2112-0")
	if _, err := cp2112.Plug(ctx, m, host.Port(1), hw); err != nil {
		fmt.Println(err)
		return
	}

	f, _ := cp2112.RequestLineEvents(m.Dev(), "gpiochip0", 5, gpio.EdgeRising)
	hw.SetInput(5, true)
	ev, _ := cp2112.ReadLineEvent(ctx, f)
	fmt.Println("event on line", ev.Line, "rising", ev.Rising)

	if err := host.Port(1).Unplug(ctx); err != nil {
		fmt.Println(err)
	}
	_, err := cp2112.ReadLineEvent(ctx, f)
	fmt.Println("after unplug:", errors.Is(err, sever.ErrNoDevice))
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	vs, _ := m.Quiesce(ctx)
	fmt.Println("violations:", len(vs))
	// Output:
	// event on line 5 rising true
	// after unplug: true
	// violations: 0
}
