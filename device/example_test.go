package device_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

// A driver publishes a provider in Probe; a consumer keeps a handle to it.
// When the device goes, the consumer's next call returns ENODEV and the
// handle is still there to Close.
func Example() {
	ctx := context.Background()
	log := &check.Log{}
	machine := device.NewCore("example", log)
	bus, _ := machine.NewBus(device.BusConfig{Name: "platform"})
	owner := sever.NewOwner("thermal", nil, sever.WithLog(log))

	var sensor *device.Provider[*int]
	if err := bus.RegisterDriver(ctx, &device.Driver{
		Name: "thermal", IDs: []string{"acme,thermal"}, Owner: owner,
		Probe: func(ctx context.Context, d *device.Device) error {
			celsius := 41
			var err error
			sensor, err = device.NewProvider(d, "temp", &celsius)
			return err
		},
		Remove: func(ctx context.Context, d *device.Device) { fmt.Println("Remove: nothing can reach the driver now") },
	}); err != nil {
		fmt.Println("register driver:", err)
		return
	}
	dev, _ := machine.Register(ctx, device.Config{Name: "thermal0", Bus: bus, Compatible: "acme,thermal"})

	h, _ := sensor.Open("fan-control")
	if err := h.Do(func(c *int) error { fmt.Println("temperature", *c); return nil }); err != nil {
		fmt.Println("read:", err)
	}

	if err := dev.Unregister(ctx); err != nil { // the hot-unplug
		fmt.Println("unregister:", err)
	}

	err := h.Do(func(c *int) error { return nil })
	fmt.Println(err, errors.Is(err, sever.ErrNoDevice))
	fmt.Println("close:", h.Close())
	fmt.Println("unload:", owner.Unload(ctx, sever.UnloadTry))
	// Output:
	// temperature 41
	// Remove: nothing can reach the driver now
	// /devices/thermal0: temp: no such device true
	// close: <nil>
	// unload: <nil>
}

// A driver acquires managed resources in Probe; they are released after
// Remove, newest first.
func ExampleDevice_AddResource() {
	ctx := context.Background()
	machine := device.NewCore("example", &check.Log{})
	bus, _ := machine.NewBus(device.BusConfig{Name: "platform"})
	if err := bus.RegisterDriver(ctx, &device.Driver{
		Name: "uart", IDs: []string{"uart"},
		Probe: func(ctx context.Context, d *device.Device) error {
			if _, err := d.AddResource("clock", func() { fmt.Println("clock off") }); err != nil {
				return err
			}
			_, err := d.AddResource("irq", func() { fmt.Println("irq freed") })
			return err
		},
		Remove: func(ctx context.Context, d *device.Device) { fmt.Println("Remove") },
	}); err != nil {
		fmt.Println("register driver:", err)
		return
	}
	dev, _ := machine.Register(ctx, device.Config{Name: "uart0", Bus: bus, Compatible: "uart"})
	if err := dev.Unregister(ctx); err != nil {
		fmt.Println("unregister:", err)
	}
	// Output:
	// Remove
	// irq freed
	// clock off
}
