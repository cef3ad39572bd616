package device

// devLink is a device's place in one list: its neighbours there. It is
// guarded by the lock of the list's holder (the parent's mu for its
// children, the core's for roots, the bus's for its devices, the driver's
// for its bound devices).
type devLink struct {
	prev, next *Device
	on         any // the list d is on, nil if none: remove from another list is a no-op
}

// linkSel picks which of a device's links a devList threads through, so
// one device can be on its parent's, its bus's and its driver's lists at
// once without an allocation per membership.
type linkSel interface{ link(d *Device) *devLink }

type (
	sibLinks   struct{} // a parent's children, or the core's roots
	busLinks   struct{} // a bus's devices
	boundLinks struct{} // a driver's bound devices
)

func (sibLinks) link(d *Device) *devLink   { return &d.sib }
func (busLinks) link(d *Device) *devLink   { return &d.onBus }
func (boundLinks) link(d *Device) *devLink { return &d.onDrv }

// devList is an intrusive list of devices, oldest first: push and remove
// are O(1) whatever the list's length, so registering or removing n
// devices costs O(n) in all (issue 13: a slice scanned per removal made a
// 10k-child unplug quadratic). The zero value is an empty list.
type devList[S linkSel] struct {
	head, tail *Device
	n          int
}

func (l *devList[S]) link(d *Device) *devLink {
	var s S
	return s.link(d)
}

// push appends d, the newest.
func (l *devList[S]) push(d *Device) {
	ld := l.link(d)
	if ld.on != nil {
		panic("device: " + d.path + " is already on a list of this kind")
	}
	ld.prev, ld.next, ld.on = l.tail, nil, l
	if l.tail != nil {
		l.link(l.tail).next = d
	} else {
		l.head = d
	}
	l.tail = d
	l.n++
}

// remove takes d off the list and reports whether it was on it.
func (l *devList[S]) remove(d *Device) bool {
	ld := l.link(d)
	if ld.on != any(l) {
		return false
	}
	if ld.prev != nil {
		l.link(ld.prev).next = ld.next
	} else {
		l.head = ld.next
	}
	if ld.next != nil {
		l.link(ld.next).prev = ld.prev
	} else {
		l.tail = ld.prev
	}
	*ld = devLink{}
	l.n--
	return true
}

// prev returns the device before d (older), or nil.
func (l *devList[S]) prev(d *Device) *Device { return l.link(d).prev }

// slice returns the devices, oldest first.
func (l *devList[S]) slice() []*Device {
	out := make([]*Device, 0, l.n)
	for d := l.head; d != nil; d = l.link(d).next {
		out = append(out, d)
	}
	return out
}

// siblings is a parent's children (or the core's roots): a devList plus an
// index by name for the duplicate check at Register, so registering n
// children is O(n) too.
type siblings struct {
	list   devList[sibLinks]
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
	s.list.push(d)
	return true
}

// remove takes d off the list and frees its name.
func (s *siblings) remove(d *Device) {
	if !s.list.remove(d) {
		return
	}
	if s.byName[d.name] == d {
		delete(s.byName, d.name)
	}
	if s.list.n == 0 {
		s.byName = nil // a map keeps its buckets; let a drained parent shrink
	}
}
