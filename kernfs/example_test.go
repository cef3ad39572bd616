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
	if _, err := t.AddAttr(dev, kernfs.Attr{
		Name: "value", Owner: drv, Parse: kernfs.Int(0, 1),
		Show:  func(_ *kernfs.Call, buf []byte) ([]byte, error) { return strconv.AppendInt(buf, value, 10), nil },
		Store: func(_ *kernfs.Call, v any) error { value = v.(int64); return nil },
	}); err != nil {
		fmt.Println("add attribute:", err)
	}
	if err := t.Activate(dev); err != nil {
		fmt.Println("activate:", err)
	}

	f, _ := t.Open("/gpiochip0/value", os.O_RDWR)
	if _, err := f.Write([]byte("0\n")); err != nil {
		fmt.Println("write:", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil { // as in sysfs, the write moved the offset
		fmt.Println("seek:", err)
	}
	b, _ := io.ReadAll(f)
	fmt.Printf("value: %s\n", b)

	if err := t.Remove(context.Background(), dev); err != nil { // unplug: does not wait for f
		fmt.Println("remove:", err)
	}
	_, err := f.Read(b)
	fmt.Println(err, errors.Is(err, syscall.ENODEV))
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	// Output:
	// value: 0
	// kernfs: /gpiochip0/value: no such device true
}

// An attribute that deletes its own device (SCSI "delete"): RemoveSelf
// drops the write's own protection, so the removal does not wait for it.
func ExampleCall_RemoveSelf() {
	t := kernfs.New()
	sda, _ := t.AddDir(t.Root(), kernfs.Dir{Name: "sda"})
	if _, err := t.AddAttr(sda, kernfs.Attr{
		Name: "delete", Parse: kernfs.Bool(),
		Store: func(c *kernfs.Call, v any) error {
			won, err := c.RemoveSelf(context.Background(), c.Node().Parent())
			fmt.Println("removed by this write:", won)
			return err
		},
	}); err != nil {
		fmt.Println("add attribute:", err)
	}
	f, _ := t.Open("/sda/delete", os.O_WRONLY)
	if _, err := f.Write([]byte("1\n")); err != nil {
		fmt.Println("write:", err)
	}
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
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
	if _, err := io.ReadAll(f); err != nil {
		fmt.Println("read:", err)
	}

	go t.Notify(n)
	ev, _ := f.Wait(context.Background())
	fmt.Println(ev)

	if _, err := f.Seek(0, io.SeekStart); err != nil {
		fmt.Println("seek:", err)
	}
	if _, err := io.ReadAll(f); err != nil { // re-arms the poll
		fmt.Println("read:", err)
	}
	removed := make(chan error, 1)
	go func() { removed <- t.Remove(context.Background(), n) }()
	ev, err := f.Wait(context.Background())
	fmt.Println(ev, errors.Is(err, sever.ErrNoDevice))
	if err := <-removed; err != nil {
		fmt.Println("remove:", err)
	}
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	// Output:
	// PRI|ERR
	// ERR|HUP true
}

// A Show that waits for hardware which never answers: it waits on its
// Call's WaitContext, so unplugging the device cuts the wait short instead of
// holding the removal, and the reader gets ENODEV.
func ExampleCall_WaitContext() {
	t := kernfs.New()
	asked := make(chan struct{})
	n, _ := t.AddAttr(t.Root(), kernfs.Attr{Name: "temp", Show: func(c *kernfs.Call, buf []byte) ([]byte, error) {
		close(asked)
		<-c.WaitContext().Done() // the sensor's reply would be selected here too
		return nil, c.WaitContext().Err()
	}})
	f, _ := t.Open("/temp", os.O_RDONLY)
	read := make(chan error)
	go func() {
		_, err := f.Read(make([]byte, 16))
		read <- err
	}()
	<-asked
	if err := t.Remove(context.Background(), n); err != nil { // returns at once
		fmt.Println("remove:", err)
	}
	err := <-read
	fmt.Println(err, errors.Is(err, syscall.ENODEV))
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	// Output:
	// kernfs: /temp: no such device true
}
