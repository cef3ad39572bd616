package uevent

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte("add@/devices/virtual/net/tap0\x00ACTION=add\x00DEVPATH=/devices/virtual/net/tap0\x00SUBSYSTEM=net\x00SEQNUM=823\x00"))
	f.Add([]byte("remove@/devices/x\x00ACTION=remove\x00DEVPATH=/devices/x\x00DEVNAME=ttyUSB0\x00SEQNUM=1"))
	f.Add([]byte("libudev\x00\xfe\xed\xca\xfe"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		ev, err := Parse(msg)
		if err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("Parse error %v does not wrap EINVAL", err)
			}
			return
		}
		if ev.Action == "" || !strings.HasPrefix(ev.Devpath, "/") || ev.Props["ACTION"] != ev.Action || ev.Props["DEVPATH"] != ev.Devpath {
			t.Fatalf("Parse accepted %q as %+v", msg, ev)
		}
		_ = ev.Sysname()
	})
}
