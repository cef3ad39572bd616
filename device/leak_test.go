package device_test

import (
	"os"
	"strings"
	"testing"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
)

// leaks returns the quiesce reports of m's log that name a leak of what.
func leaks(t *testing.T, m *machine, what string) (n int) {
	t.Helper()
	for _, v := range m.log.Quiesce(ctxT(t)) {
		if v.Class == check.ReleaseNeverRun && strings.Contains(v.Detail, what) {
			n++
			continue
		}
		t.Errorf("reported besides the leak: %v", v)
	}
	return n
}

// TestLeakedHandleIsReportedAtQuiesce: a consumer that never closes its
// Handle is reported at quiesce like an unbalanced Get, even though the
// provider's revocation made the handle a harmless shell.
func TestLeakedHandleIsReportedAtQuiesce(t *testing.T) {
	for _, closeIt := range []bool{false, true} {
		m := newMachine(t)
		dev := m.register("gpio0", nil, "")
		p, err := device.NewProvider(dev, "lines", 7)
		if err != nil {
			t.Fatal(err)
		}
		h, err := p.Open("leds")
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Unregister(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if closeIt {
			closeOK(t, h)
		}
		n := leaks(t, m, "handle of leds")
		if want := map[bool]int{false: 1, true: 0}[closeIt]; n != want {
			t.Errorf("closed %v: %d leak reports of the handle, want %d", closeIt, n, want)
		}
	}
}

// TestLeakedAttributeFileIsReportedAtQuiesce: a kernfs File never closed
// is reported at quiesce, also when the node's removal ran its Release.
func TestLeakedAttributeFileIsReportedAtQuiesce(t *testing.T) {
	for _, closeIt := range []bool{false, true} {
		m := newMachine(t)
		dev, err := m.core.Register(ctxT(t), device.Config{Name: "hw0", Bus: m.bus,
			Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "fan",
				Show: func(c *kernfs.Call, d *device.Device, buf []byte) ([]byte, error) {
					return append(buf, "1200\n"...), nil
				}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		f, err := m.core.Sysfs().Open("/devices/hw0/fan", os.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Unregister(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if closeIt {
			closeOK(t, f)
		}
		n := leaks(t, m, "the open leaked")
		if want := map[bool]int{false: 1, true: 0}[closeIt]; n != want {
			t.Errorf("closed %v: %d leak reports of the file, want %d", closeIt, n, want)
		}
	}
}
