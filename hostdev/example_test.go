package hostdev_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/hostdev"
)

// plugSerial plugs in a "USB serial adapter": a pseudo-terminal pair whose
// slave is the port a program opens and whose master is the adapter's far
// end. Closing the master is a real hang-up of the port, as pulling the
// adapter is.
func plugSerial() (far *os.File, port string) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		panic(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		panic(err)
	}
	n, _ := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// A serial reader that survives the adapter being pulled and plugged back
// in under another name. The reader opens whatever port the adapter is on
// now — a real program asks a Host with OpenKey and a Key holding the
// adapter's serial number — and reads until the port goes: then its Read
// returns ENODEV (not a hang, not an empty read), it closes the shell and
// opens the port again.
func Example_serialReader() {
	ports := make(chan string) // where the adapter is now
	lines := make(chan string) // what the reader read, for the far end to pace itself
	done := make(chan struct{})

	go func() { // the reader
		defer close(done)
		for port := range ports {
			f, err := hostdev.Open(port, os.O_RDWR|syscall.O_NOCTTY)
			if err != nil {
				fmt.Println("open:", err)
				return
			}
			buf := make([]byte, 64)
			for {
				n, err := f.Read(buf)
				if errors.Is(err, syscall.ENODEV) {
					fmt.Println("adapter gone; waiting for it to come back")
					break
				}
				lines <- string(buf[:n])
			}
			if err := f.Close(); err != nil {
				fmt.Println("close:", err)
			}
		}
	}()

	for _, msg := range []string{"hello\n", "again\n"} { // the adapter, plugged twice
		far, port := plugSerial()
		ports <- port
		if _, err := far.Write([]byte(msg)); err != nil {
			panic(err)
		}
		fmt.Printf("read %q\n", <-lines)
		// pulled
		if err := far.Close(); err != nil {
			panic(err)
		}
	}
	close(ports)
	<-done
	// Output:
	// read "hello\n"
	// adapter gone; waiting for it to come back
	// read "again\n"
	// adapter gone; waiting for it to come back
}

// A reader of a USB serial adapter, known by its serial number, that
// follows it from ttyUSB0 to ttyUSB1 and back across unplugs. (Not run:
// it needs the adapter.)
func ExampleHost_OpenKey() {
	ctx := context.Background()
	core := device.NewCore("host", nil)
	h, err := hostdev.New(ctx, hostdev.Config{Core: core, Subsystems: []string{"tty"}})
	if err != nil {
		panic(err)
	}
	defer func() {
		if err := h.Close(ctx); err != nil {
			fmt.Println("close:", err)
		}
	}()
	key := hostdev.Key{Subsystem: "tty", Attrs: map[string]string{"serial": "A6008isP"}}
	buf := make([]byte, 256)
	for {
		f, err := h.OpenKey(ctx, key, hostdev.DevNode(os.O_RDWR|syscall.O_NOCTTY))
		if err != nil {
			return // ctx is done
		}
		f.OnGone(func() { fmt.Println("unplugged") })
		for {
			n, err := f.Read(buf)
			if err != nil {
				break // ENODEV: the adapter went
			}
			fmt.Printf("%q\n", buf[:n])
		}
		if err := f.Close(); err != nil {
			fmt.Println("close:", err)
		}
	}
}
