package chardev_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
)

// A driver registers a char device; a process opens it by name and reads.
// The device is unplugged while the file is open: the driver's Release
// runs during the unplug, later reads fail with ENODEV, and Close still
// works without calling the driver.
func Example() {
	ctx := context.Background()
	log := &check.Log{}
	machine := device.NewCore("example", log)
	dev, _ := machine.Register(ctx, device.Config{Name: "sensor0"})

	if _, err := chardev.Register(dev, chardev.Config{Name: "sensor0", Ops: chardev.Ops{
		Read:    func(c *chardev.Call, b []byte) (int, error) { return copy(b, "21.5C"), nil },
		Release: func(c *chardev.Call) { fmt.Println("driver: Release") },
	}}); err != nil {
		fmt.Println("register:", err)
	}

	f, _ := chardev.RegistryOf(machine).Open("/dev/sensor0", os.O_RDONLY)
	buf := make([]byte, 16)
	n, _ := f.Read(buf)
	fmt.Printf("read %q\n", buf[:n])

	if err := dev.Unregister(ctx); err != nil { // the hot-unplug
		fmt.Println("unregister:", err)
	}
	fmt.Println("unplugged")

	_, err := f.Read(buf)
	fmt.Println(err, errors.Is(err, syscall.ENODEV))
	fmt.Println("close:", f.Close())
	fmt.Println("violations:", len(log.Quiesce(ctx)))
	// Output:
	// read "21.5C"
	// driver: Release
	// unplugged
	// chardev: /dev/sensor0: no such device true
	// close: <nil>
	// violations: 0
}

// Memory a driver lets processes map is handed over as a sever.Region. The
// mapping outlives the device; the framework frees the memory once the
// device is gone and the last mapping and open are too.
func ExampleFile_Mmap() {
	ctx := context.Background()
	log := &check.Log{}
	machine := device.NewCore("example", log)
	dev, _ := machine.Register(ctx, device.Config{Name: "ring0"})
	ring, _ := sever.NewRegion("ring0 pages", make([]byte, 4096), sever.WithLog(log))
	cd, _ := chardev.Register(dev, chardev.Config{Name: "ring0", Regions: []*sever.Region{ring}})

	f, _ := cd.Open(os.O_RDWR)
	m, _ := f.Mmap(0)
	m.Bytes()[0] = 7

	if err := dev.Unregister(ctx); err != nil {
		fmt.Println("unregister:", err)
	}
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	fmt.Println("after unplug and close the mapping still reads", m.Bytes()[0])
	if err := m.Unmap(); err != nil {
		fmt.Println("unmap:", err)
	}
	fmt.Println("pages freed:", ring.Freed())
	fmt.Println("violations:", len(log.Quiesce(ctx)))
	// Output:
	// after unplug and close the mapping still reads 7
	// pages freed: true
	// violations: 0
}

// A driver whose Read has nothing yet returns sever.ErrWouldBlock; the
// framework waits, outside the driver, until the driver calls Notify.
func ExampleCdev_Notify() {
	ctx := context.Background()
	machine := device.NewCore("example", &check.Log{})
	dev, _ := machine.Register(ctx, device.Config{Name: "button0"})
	pressed := make(chan struct{}, 1)
	cd, _ := chardev.Register(dev, chardev.Config{Name: "button0", Ops: chardev.Ops{
		Read: func(c *chardev.Call, b []byte) (int, error) {
			select {
			case <-pressed:
				return copy(b, "press"), nil
			default:
				return 0, sever.ErrWouldBlock
			}
		},
	}})
	f, _ := cd.Open(os.O_RDONLY)
	go func() {
		pressed <- struct{}{} // the hardware event...
		cd.Notify(sever.EventIn)
	}()
	buf := make([]byte, 8)
	n, err := f.ReadContext(ctx, buf)
	fmt.Printf("%q %v\n", buf[:n], err)
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	if err := dev.Unregister(ctx); err != nil {
		fmt.Println("unregister:", err)
	}
	// Output:
	// "press" <nil>
}
