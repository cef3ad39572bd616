package device

import (
	"slices"
	"strconv"
	"testing"
)

func testDevs(n int) []*Device {
	ds := make([]*Device, n)
	for i := range ds {
		ds[i] = &Device{name: "d" + strconv.Itoa(i), path: "/devices/d" + strconv.Itoa(i)}
	}
	return ds
}

// checkSiblings fails unless s holds want, oldest first, each named in its
// index. (The list itself is proven in package ilist.)
func checkSiblings(t *testing.T, s *siblings, want []*Device) {
	t.Helper()
	if got := deviceSlice(&s.list); !slices.Equal(got, want) || s.list.Len() != len(want) {
		t.Fatalf("siblings hold %d (Len %d), want %d in order", len(got), s.list.Len(), len(want))
	}
	for _, d := range want {
		if s.byName[d.name] != d {
			t.Fatalf("%s is not indexed by its name", d.name)
		}
	}
}

// TestSiblingsNameIndex: a duplicate name is refused without a scan, a
// removed device frees its name, and an emptied index is dropped.
func TestSiblingsNameIndex(t *testing.T) {
	ds := testDevs(3)
	var s siblings
	for _, d := range ds {
		if !s.add(d) {
			t.Fatalf("add %s refused", d.name)
		}
	}
	dup := &Device{name: "d1", path: "/devices/d1"}
	if s.add(dup) {
		t.Fatal("duplicate name accepted")
	}
	checkSiblings(t, &s, ds)
	s.remove(dup) // never added: changes nothing
	if s.byName["d1"] != ds[1] {
		t.Fatal("removing a non-member freed a member's name")
	}
	checkSiblings(t, &s, ds)
	s.remove(ds[1])
	checkSiblings(t, &s, []*Device{ds[0], ds[2]})
	if !s.add(dup) {
		t.Fatal("name of a removed device not freed")
	}
	for _, d := range []*Device{ds[0], ds[2], dup} {
		s.remove(d)
	}
	if s.byName != nil || s.list.Len() != 0 {
		t.Fatal("emptied siblings keep their index")
	}
}

// TestDeviceOnThreeListsAtOnce: a device's places among its siblings, on
// its bus and on its driver's list are independent — leaving one leaves
// the others as they were — and a device already among siblings cannot be
// added to siblings again (the misuse panics and changes nothing).
func TestDeviceOnThreeListsAtOnce(t *testing.T) {
	ds := testDevs(3)
	var sib siblings
	var bus, drv = &Bus{}, &Driver{}
	for _, d := range ds {
		sib.add(d)
		bus.devices.PushBack(d, &d.onBus)
		drv.bound.PushBack(d, &d.onDrv)
	}
	drv.dropBound(ds[1])
	drv.dropBound(ds[1]) // a second drop does nothing
	if got := deviceSlice(&drv.bound); !slices.Equal(got, []*Device{ds[0], ds[2]}) {
		t.Fatal("dropBound did not take exactly the device off the driver's list")
	}
	if !slices.Equal(deviceSlice(&bus.devices), ds) {
		t.Fatal("leaving the driver's list changed the bus's")
	}
	checkSiblings(t, &sib, ds)
	var other siblings
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("adding a device already among siblings to other siblings did not panic")
			}
		}()
		other.list.PushBack(ds[0], &ds[0].sib)
	}()
	checkSiblings(t, &sib, ds)
	checkSiblings(t, &other, nil)
}
