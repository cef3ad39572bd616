package uevent

import (
	"errors"
	"syscall"
	"testing"
)

func TestParseReadsHeaderAndProperties(t *testing.T) {
	msg := []byte("add@/devices/virtual/net/tap0\x00ACTION=add\x00DEVPATH=/devices/virtual/net/tap0\x00SUBSYSTEM=net\x00INTERFACE=tap0\x00SEQNUM=823\x00")
	ev, err := Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != "add" || ev.Devpath != "/devices/virtual/net/tap0" || ev.Subsystem != "net" || ev.Seqnum != 823 || ev.Props["INTERFACE"] != "tap0" || ev.Sysname() != "tap0" {
		t.Fatalf("parsed %+v: a field of the message was lost", ev)
	}
	if ev.Devname != "" {
		t.Fatalf("Devname = %q for a device without DEVNAME", ev.Devname)
	}
	ev, err = Parse([]byte("add@/devices/virtual/tty/ttyS0\x00ACTION=add\x00DEVPATH=/devices/virtual/tty/ttyS0\x00SUBSYSTEM=tty\x00DEVNAME=ttyS0\x00SEQNUM=1\x00"))
	if err != nil || ev.Devname != "ttyS0" {
		t.Fatalf("Parse = %+v, %v; want Devname ttyS0", ev, err)
	}
}

func TestParseRefusesWhatIsNotAUevent(t *testing.T) {
	for _, msg := range []string{
		"",
		"libudev\x00\xfe\xed\xca\xfe",
		"add@/devices/x\x00DEVPATH=/devices/x\x00",                       // no ACTION
		"add@/devices/x\x00ACTION=add\x00",                               // no DEVPATH
		"add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SEQNUM=z", // bad SEQNUM
	} {
		if _, err := Parse([]byte(msg)); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Parse(%q) = %v, want EINVAL", msg, err)
		}
	}
}

func TestEnumerateFindsLoopback(t *testing.T) {
	evs, err := Enumerate("/sys")
	if err != nil {
		t.Skipf("no readable /sys here: %v", err)
	}
	for _, ev := range evs {
		if ev.Devpath == "/devices/virtual/net/lo" {
			if ev.Subsystem != "net" || ev.Action != ActionAdd || !ev.Coldplug || ev.Props["INTERFACE"] != "lo" {
				t.Fatalf("lo enumerated as %+v", ev)
			}
			return
		}
	}
	t.Fatalf("Enumerate listed %d devices but not /devices/virtual/net/lo", len(evs))
}

func TestEnumerateOfMissingSysfsFails(t *testing.T) {
	if _, err := Enumerate(t.TempDir()); err == nil {
		t.Fatal("Enumerate of a directory without devices/ succeeded")
	}
}
