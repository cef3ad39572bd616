package chardev_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/device"
)

// TestOpsPanicWithoutALogFailsTheCallWithEIO: Ops promises recovery; a
// machine without a checker used to panic inside the checker instead.
func TestOpsPanicWithoutALogFailsTheCallWithEIO(t *testing.T) {
	c := device.NewCore(t.Name(), nil)
	dev, err := c.Register(context.Background(), device.Config{Name: "dev0"})
	if err != nil {
		t.Fatal(err)
	}
	cd, err := chardev.Register(dev, chardev.Config{Name: "bad0", Ops: chardev.Ops{
		Read: func(*chardev.Call, []byte) (int, error) { panic("driver bug") },
	}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := cd.Open(os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 4)); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a panicking Read without a log: %v, want EIO", err)
	}
	closeOK(t, f)
	if err := dev.Unregister(context.Background()); err != nil {
		t.Fatal(err)
	}
}
