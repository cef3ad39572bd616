package sim_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
)

// GUIDE.md's "your first driver", whole: a thermometer driver with an
// attribute and a char device, a consumer, an unplug under the consumer's
// feet, and the checker's verdict. GUIDE.md quotes this function between
// its markers; TestGuideQuotesItsExample keeps the two the same.
func Example_firstDriver() {
	// guide:begin
	ctx := context.Background()
	m := sim.New("guide") // your machine: its own core, sysfs, dev/, log
	mod, _ := m.Insmod("thermo", nil)

	// The driver: its state, an attribute, a char device.
	type thermo struct{ limit atomic.Int64 }
	state := device.DriverDataOf[*thermo] // the driver's data, typed
	drv := &device.Driver{
		Name: "thermo", Owner: mod, IDs: []string{"acme,thermo"},
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{
			Name:  "limit",
			Parse: kernfs.Int(0, 150),
			Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
				t, _ := state(d)
				return fmt.Appendf(buf, "%d\n", t.limit.Load()), nil
			},
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				t, _ := state(d)
				t.limit.Store(v.(int64))
				return nil
			},
		}}}},
		Probe: func(ctx context.Context, d *device.Device) error {
			t := &thermo{}
			t.limit.Store(90)
			d.SetDriverData(t)
			_, err := chardev.Register(d, chardev.Config{Name: "thermo0", Ops: chardev.Ops{
				Read: func(c *chardev.Call, buf []byte) (int, error) {
					return copy(buf, "42\n"), nil
				},
			}})
			return err // the char device goes with the binding
		},
	}
	if err := m.Platform().RegisterDriver(ctx, drv); err != nil {
		fmt.Println(err)
	}

	// Plug the hardware: the core binds the driver.
	dev, _ := m.Core().Register(ctx, device.Config{Name: "thermo0", Bus: m.Platform(), Compatible: "acme,thermo"})

	// A consumer: writes the attribute, reads it and the char device,
	// and keeps both open.
	attr, _ := m.Sysfs().Open("/devices/thermo0/limit", os.O_RDWR)
	if _, err := attr.Write([]byte("75")); err != nil {
		fmt.Println(err)
	}
	if _, err := attr.Seek(0, io.SeekStart); err != nil { // the write moved the offset
		fmt.Println(err)
	}
	limit, _ := io.ReadAll(attr)
	cdev, _ := m.Dev().Open("thermo0", os.O_RDONLY)
	buf := make([]byte, 8)
	n, _ := cdev.Read(buf)
	fmt.Print("limit ", string(limit), "temp ", string(buf[:n]))

	// Unplug under the consumer's feet: Unregister waits for calls in
	// flight, never for files to be closed; then no driver code runs.
	if err := dev.Unregister(ctx); err != nil {
		fmt.Println(err)
	}
	_, err := cdev.Read(buf)
	fmt.Println("read after unplug:", err)
	_, err = attr.ReadAt(buf, 0)
	fmt.Println("attribute after unplug:", err)

	// The consumer closes what it opened (a leak would be reported).
	// A file's first Close succeeds, its device gone or not.
	for _, f := range []io.Closer{attr, cdev} {
		if err := f.Close(); err != nil {
			fmt.Println(err)
		}
	}

	// The checker's verdict: unload everything, audit, list violations.
	vs, err := m.Quiesce(ctx)
	fmt.Println("violations:", len(vs), err)
	// guide:end

	// Output:
	// limit 75
	// temp 42
	// read after unplug: chardev: /dev/thermo0: no such device
	// attribute after unplug: kernfs: /devices/thermo0/limit: no such device
	// violations: 0 <nil>
}

// TestGuideQuotesItsExample keeps GUIDE.md true: its code block is
// Example_firstDriver's body between the guide markers, unindented once.
func TestGuideQuotesItsExample(t *testing.T) {
	src, err := os.ReadFile("guide_example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	guide, err := os.ReadFile("../GUIDE.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	i, j := strings.Index(s, "// guide:begin\n"), strings.Index(s, "\t// guide:end")
	if i < 0 || j < i {
		t.Fatal("the example lost its guide markers")
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s[i+len("// guide:begin\n"):j], "\n"), "\n") {
		b.WriteString(strings.TrimPrefix(l, "\t") + "\n")
	}
	if !strings.Contains(string(guide), "```go\n"+b.String()+"```") {
		t.Error("GUIDE.md does not quote Example_firstDriver as it is: copy the code between the guide markers into its code block")
	}
}
