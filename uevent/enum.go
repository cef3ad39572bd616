package uevent

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Enumerate reads every device under sysfs/devices (sysfs is "/sys" on a
// host) as the coldplug "add" event the kernel would send for it now: each
// directory with a uevent file and a subsystem link, its properties those
// of the uevent file plus ACTION, DEVPATH and SUBSYSTEM. It is what
// `udevadm trigger --dry-run` walks. Devices that vanish while it reads are
// left out; a sysfs that cannot be read at all is an error.
func Enumerate(sysfs string) ([]Event, error) {
	root := filepath.Join(sysfs, "devices")
	if _, err := os.Stat(root); err != nil {
		return nil, err
	}
	var out []Event
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return fs.SkipDir // vanished or unreadable: not ours to report
		}
		if !d.IsDir() {
			return nil
		}
		if ev, ok := readDevice(sysfs, path); ok {
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

// readDevice reads the device at dir, if it is one.
func readDevice(sysfs, dir string) (Event, bool) {
	link, err := os.Readlink(filepath.Join(dir, "subsystem"))
	if err != nil {
		return Event{}, false
	}
	data, err := os.ReadFile(filepath.Join(dir, "uevent"))
	if err != nil {
		return Event{}, false
	}
	devpath := strings.TrimPrefix(dir, filepath.Clean(sysfs))
	ev := Event{Coldplug: true, Props: map[string]string{
		"ACTION":    ActionAdd,
		"DEVPATH":   devpath,
		"SUBSYSTEM": filepath.Base(link),
	}}
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		if k, v, ok := bytes.Cut(line, []byte{'='}); ok && len(k) > 0 {
			ev.Props[string(k)] = string(v)
		}
	}
	if ev.fill() != nil {
		return Event{}, false
	}
	return ev, true
}
