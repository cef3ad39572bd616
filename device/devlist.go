package device

import (
	"slices"

	"github.com/sever-dev/sever/internal/ilist"
)

// A device is on up to three lists at once, each an ilist.List[Device]
// threaded through its own Links in the Device, guarded by the lock of the
// list's holder:
//
//	sib    a parent's children (siblings.list), or the core's roots: the parent's mu, the core's
//	onBus  a bus's devices: the bus's mu
//	onDrv  a driver's bound devices: the driver's mu
//
// Push and remove are O(1) whatever the list's length, so registering or
// removing n devices costs O(n) in all (issue 13: a slice scanned per
// removal made a 10k-child unplug quadratic), and Remove of a device not on
// the list (a Register that failed before joining it) does nothing.

// deviceSlice returns the devices on l, oldest first. The caller holds
// l's lock.
func deviceSlice(l *ilist.List[Device]) []*Device {
	return slices.AppendSeq(make([]*Device, 0, l.Len()), l.All())
}

// siblings is a parent's children (or the core's roots), oldest first,
// threaded through each device's sib: a list plus an index by name for the
// duplicate check at Register, so registering n children is O(n) too.
type siblings struct {
	list   ilist.List[Device]
	byName map[string]*Device // made at the first child: idle leaves cost no map
}

// add appends d unless a sibling has its name, and reports whether it did.
func (s *siblings) add(d *Device) bool {
	if _, dup := s.byName[d.name]; dup {
		return false
	}
	if s.byName == nil {
		s.byName = make(map[string]*Device)
	}
	s.byName[d.name] = d
	s.list.PushBack(d, &d.sib)
	return true
}

// remove takes d off the list and frees its name; a d not on it changes
// nothing.
func (s *siblings) remove(d *Device) {
	if !s.list.Remove(&d.sib) {
		return
	}
	if s.byName[d.name] == d {
		delete(s.byName, d.name)
	}
	if s.list.Len() == 0 {
		s.byName = nil // a map keeps its buckets; let a drained parent shrink
	}
}
