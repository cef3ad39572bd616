package hostdev

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sever-dev/sever"
)

// Key names a device by what stays when it is unplugged and plugged again,
// as the links in /dev/serial/by-id and /dev/serial/by-path do, rather than
// by the name the kernel happens to give it (ttyUSB0 today, ttyUSB1 after a
// re-plug). Every field that is set must match; a Key with none set names
// nothing and is refused.
type Key struct {
	// Subsystem, if set, is the device's subsystem ("tty").
	Subsystem string
	// Devpath, if set, is the device's whole path below /sys.
	Devpath string
	// Port, if set, is the devpath of the port the device hangs below
	// (/dev/serial/by-path): "/devices/pci0000:00/0000:00:14.0/usb1/1-2"
	// matches any device whose devpath begins with it and a '/'.
	Port string
	// Props are uevent properties that must have these values
	// ({"INTERFACE": "tap0"}, or udev's ID_SERIAL where udev adds it).
	Props map[string]string
	// Attrs are sysfs attributes that must have these values, on the
	// device itself or on one of its ancestors — all on the same one — as
	// in udev's ATTRS{}: {"serial": "A6008isP"} finds a USB serial
	// adapter's tty by its USB device's serial number, {"address":
	// "02:00:00:00:00:01"} a network interface by its MAC address. Values
	// are compared after trimming one trailing newline. They are read from
	// sysfs when Find or Wait looks — at the call, and in Wait after each
	// event — so a value set after the device's add uevent is seen at the
	// next call or event, not at the moment it is written.
	Attrs map[string]string
}

// String lists k's fields that are set: "{subsystem=tty ATTRS{serial}=A6008isP}".
func (k Key) String() string {
	var parts []string
	if k.Subsystem != "" {
		parts = append(parts, "subsystem="+k.Subsystem)
	}
	if k.Devpath != "" {
		parts = append(parts, "devpath="+k.Devpath)
	}
	if k.Port != "" {
		parts = append(parts, "port="+k.Port)
	}
	for _, m := range []struct {
		kind string
		m    map[string]string
	}{{"", k.Props}, {"ATTRS", k.Attrs}} {
		var ks []string
		for n, v := range m.m {
			if m.kind != "" {
				n = m.kind + "{" + n + "}"
			}
			ks = append(ks, n+"="+v)
		}
		sort.Strings(ks)
		parts = append(parts, ks...)
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func (k Key) check() error {
	if k.Subsystem == "" && k.Devpath == "" && k.Port == "" && len(k.Props) == 0 && len(k.Attrs) == 0 {
		return fmt.Errorf("hostdev: a Key that names nothing would match every device: %w", sever.ErrInvalid)
	}
	for n := range k.Attrs {
		if n == "" || strings.ContainsAny(n, "/\x00") || n == "." || n == ".." {
			return fmt.Errorf("hostdev: Key attribute %q: %w", n, sever.ErrInvalid)
		}
	}
	return nil
}

// matches reports whether d matches k; attributes are read from sysfs now.
func (k Key) matches(sysfs string, d *Device) bool {
	ev := d.event()
	if k.Subsystem != "" && ev.Subsystem != k.Subsystem ||
		k.Devpath != "" && ev.Devpath != k.Devpath ||
		k.Port != "" && !strings.HasPrefix(ev.Devpath, strings.TrimSuffix(k.Port, "/")+"/") {
		return false
	}
	for n, v := range k.Props {
		if got, ok := ev.Props[n]; !ok || got != v {
			return false
		}
	}
	if len(k.Attrs) == 0 {
		return true
	}
	for dir := filepath.Join(sysfs, ev.Devpath); strings.HasPrefix(dir, filepath.Join(sysfs, "devices")+"/"); dir = filepath.Dir(dir) {
		if k.attrsAt(dir) {
			return true
		}
	}
	return false
}

// attrsAt reports whether every attribute of k has its value in dir.
func (k Key) attrsAt(dir string) bool {
	for n, v := range k.Attrs {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || strings.TrimSuffix(string(b), "\n") != v {
			return false
		}
	}
	return true
}
