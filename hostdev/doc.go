// Package hostdev gives the host's own hot-pluggable devices — a USB serial
// adapter, a hidraw node, a gpiochip, a tap — sever's contract: when the
// device goes, the next call on its handle returns ENODEV, a blocked call
// or poller wakes with an error, Close never hangs, and the process keeps
// living (seed 000).
//
// A File is a handle on one device file. A Host watches the host's uevents
// (package uevent), mirrors the devices it is told to as sever devices on a
// bus of its own in a device.Core — so a device's removal takes the driver
// core's one removal path, which severs every File opened on it through
// Host.Open — and finds a device by a stable Key (a serial number, a MAC
// address, the port it is plugged into) whatever name it came back under.
package hostdev
