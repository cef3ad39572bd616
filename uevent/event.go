// Package uevent watches the host's devices come and go: the kernel's
// uevents from a NETLINK_KOBJECT_UEVENT socket, preceded by an enumeration
// of /sys so that devices already present are seen, and followed by a fresh
// enumeration whenever an event could have been lost.
package uevent

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/sever-dev/sever"
)

// The actions the kernel announces (lib/kobject_uevent.c), and ActionResync,
// which is the Watcher's own.
const (
	ActionAdd     = "add"
	ActionRemove  = "remove"
	ActionChange  = "change"
	ActionMove    = "move"
	ActionOnline  = "online"
	ActionOffline = "offline"
	ActionBind    = "bind"
	ActionUnbind  = "unbind"
	// ActionResync is not the kernel's: the Watcher says with it that what
	// the consumer knew may be stale (at the start, after its queue
	// overflowed, after the kernel's ENOBUFS). Its Snapshot is every device
	// present now; the consumer replaces what it knew by it.
	ActionResync = "resync"
)

// Why a resync happened (Event.Reason).
const (
	ReasonStart    = "start"    // the first event of every Watcher
	ReasonOverflow = "overflow" // the consumer fell QueueLen events behind
	ReasonENOBUFS  = "enobufs"  // the kernel dropped events: its socket buffer was full
)

// Event is one uevent: a device's action, or a resync.
//
// Events from the kernel carry the kernel's Seqnum; events of a Snapshot
// come from reading /sys, have Action "add", Seqnum 0 and Coldplug set.
type Event struct {
	Action    string            `json:"action"`
	Subsystem string            `json:"subsystem,omitempty"`
	Devpath   string            `json:"devpath,omitempty"` // below /sys: "/devices/virtual/net/tap0"
	Devname   string            `json:"devname,omitempty"` // below /dev: "ttyUSB0", "net/tun"; "" if none
	Seqnum    uint64            `json:"seqnum"`
	Coldplug  bool              `json:"coldplug,omitempty"`
	Reason    string            `json:"reason,omitempty"` // ActionResync only
	Props     map[string]string `json:"properties,omitempty"`
	// Snapshot, for ActionResync only, is every device present, read from
	// /sys after the loss (or at the start), in no particular order.
	Snapshot []Event `json:"-"`
}

// Sysname returns the kernel's name of the device: Devpath's last element.
func (e Event) Sysname() string {
	return e.Devpath[strings.LastIndexByte(e.Devpath, '/')+1:]
}

// String is "SEQNUM ACTION DEVPATH (SUBSYSTEM)", or a resync's reason and size.
func (e Event) String() string {
	if e.Action == ActionResync {
		return fmt.Sprintf("resync (%s) of %d devices", e.Reason, len(e.Snapshot))
	}
	return fmt.Sprintf("%d %s %s (%s)", e.Seqnum, e.Action, e.Devpath, e.Subsystem)
}

// Parse decodes one kernel uevent message, "ACTION@DEVPATH\0KEY=VALUE\0...".
// A message that is not one — a libudev message, a header without '@', a
// body without ACTION or DEVPATH, a SEQNUM that is not a number — returns an
// error wrapping sever.ErrInvalid.
func Parse(msg []byte) (Event, error) {
	head, body, _ := bytes.Cut(msg, []byte{0})
	if !bytes.Contains(head, []byte{'@'}) {
		return Event{}, fmt.Errorf("uevent: message without ACTION@DEVPATH header: %w", sever.ErrInvalid)
	}
	ev := Event{Props: make(map[string]string)}
	for len(body) > 0 {
		var kv []byte
		kv, body, _ = bytes.Cut(body, []byte{0})
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		ev.Props[string(k)] = string(v)
	}
	if err := ev.fill(); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// fill sets the named fields from Props.
func (e *Event) fill() error {
	e.Action, e.Devpath = e.Props["ACTION"], e.Props["DEVPATH"]
	e.Subsystem, e.Devname = e.Props["SUBSYSTEM"], e.Props["DEVNAME"]
	if e.Action == "" || !strings.HasPrefix(e.Devpath, "/") {
		return fmt.Errorf("uevent: message without ACTION or DEVPATH: %w", sever.ErrInvalid)
	}
	if s, ok := e.Props["SEQNUM"]; ok {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("uevent: SEQNUM %q: %w", s, sever.ErrInvalid)
		}
		e.Seqnum = n
	}
	return nil
}
