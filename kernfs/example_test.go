package kernfs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

// A driver builds a device hidden, activates it whole, and removes it on
// unplug; the user's open file turns into a shell that reports ENODEV.
func Example() {
	t := kernfs.New()
	drv := sever.NewOwner("gpio_cp2112", nil)
	value := int64(1)

	dev, _ := t.AddDir(t.Root(), kernfs.Dir{Name: "gpiochip0", Owner: drv, Hidden: true})
	t.AddAttr(dev, kernfs.Attr{
		Name: "value", Owner: drv, Parse: kernfs.Int(0, 1),
		Show:  func(_ *kernfs.Call, buf []byte) ([]byte, error) { return strconv.AppendInt(buf, value, 10), nil },
		Store: func(_ *kernfs.Call, v any) error { value = v.(int64); return nil },
	})
	t.Activate(dev)

	f, _ := t.Open("/gpiochip0/value", os.O_RDWR)
	f.Write([]byte("0\n"))
	f.Seek(0, io.SeekStart) // as in sysfs, the write moved the offset
	b, _ := io.ReadAll(f)
	fmt.Printf("value: %s\n", b)

	t.Remove(context.Background(), dev) // unplug: does not wait for f
	_, err := f.Read(b)
	fmt.Println(err, errors.Is(err, syscall.ENODEV))
	f.Close()
	// Output:
	// value: 0
	// kernfs: /gpiochip0/value: no such device true
}

// An attribute that deletes its own device (SCSI "delete"): RemoveSelf
// drops the write's own protection, so the removal does not wait for it.
func ExampleCall_RemoveSelf() {
	t := kernfs.New()
	sda, _ := t.AddDir(t.Root(), kernfs.Dir{Name: "sda"})
	t.AddAttr(sda, kernfs.Attr{
		Name: "delete", Parse: kernfs.Bool(),
		Store: func(c *kernfs.Call, v any) error {
			won, err := c.RemoveSelf(context.Background(), c.Node().Parent())
			fmt.Println("removed by this write:", won)
			return err
		},
	})
	f, _ := t.Open("/sda/delete", os.O_WRONLY)
	f.Write([]byte("1\n"))
	f.Close()
	_, err := t.Lookup("/sda")
	fmt.Println(err)
	// Output:
	// removed by this write: true
	// kernfs: /sda: no such file or directory
}

// A poller waits on the file's own wait queue, which the framework owns:
// Notify wakes it with PRI|ERR, removal with ERR|HUP.
func ExampleFile_Wait() {
	t := kernfs.New()
	n, _ := t.AddAttr(t.Root(), kernfs.Attr{
		Name: "pressure",
		Show: func(_ *kernfs.Call, buf []byte) ([]byte, error) { return append(buf, "some avg10=0.00\n"...), nil },
	})
	f, _ := t.OpenNode(n, os.O_RDONLY)
	defer f.Close()
	io.ReadAll(f)

	go t.Notify(n)
	ev, _ := f.Wait(context.Background())
	fmt.Println(ev)

	f.Seek(0, io.SeekStart)
	io.ReadAll(f) // re-arms the poll
	go t.Remove(context.Background(), n)
	ev, err := f.Wait(context.Background())
	fmt.Println(ev, errors.Is(err, sever.ErrNoDevice))
	// Output:
	// PRI|ERR
	// ERR|HUP true
}
