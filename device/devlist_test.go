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

// checkList fails unless l holds want, oldest first, linked both ways.
func checkList[S linkSel](t *testing.T, l *devList[S], want []*Device) {
	t.Helper()
	if got := l.slice(); !slices.Equal(got, want) || l.n != len(want) {
		t.Fatalf("list holds %d (n=%d), want %d in order", len(got), l.n, len(want))
	}
	var back []*Device
	for d := l.tail; d != nil; d = l.prev(d) {
		back = append(back, d)
	}
	slices.Reverse(back)
	if !slices.Equal(back, want) {
		t.Fatal("the list's backward links disagree with its forward links")
	}
}

// TestDevListRemoveTouchesOnlyNeighbours is the structural proof that
// unplug is linear: removing a device rewrites only its own links and its
// two neighbours' (or the list's ends), whatever the list's length — the
// other devices' links are byte-for-byte unchanged. A scan (the old
// slices.DeleteFunc) would not show here, but a removal that rebuilt or
// shifted the list would.
func TestDevListRemoveTouchesOnlyNeighbours(t *testing.T) {
	ds := testDevs(1000)
	var l devList[sibLinks]
	for _, d := range ds {
		l.push(d)
	}
	checkList(t, &l, ds)
	victim := ds[500]
	before := make([]devLink, len(ds))
	for i, d := range ds {
		before[i] = d.sib
	}
	if !l.remove(victim) {
		t.Fatal("remove of a member reported false")
	}
	for i, d := range ds {
		switch i {
		case 499:
			if d.sib.next != ds[501] {
				t.Fatal("older neighbour not relinked")
			}
		case 501:
			if d.sib.prev != ds[499] {
				t.Fatal("newer neighbour not relinked")
			}
		case 500:
			if d.sib != (devLink{}) {
				t.Fatal("removed device keeps links")
			}
		default:
			if d.sib != before[i] {
				t.Fatalf("removing d500 changed the links of d%d", i)
			}
		}
	}
	checkList(t, &l, slices.Delete(slices.Clone(ds), 500, 501))
}

// TestDevListNewestFirstAndAnyOrder removes newest first (an unplug's
// order), then from an arbitrary order, checking the list after each step.
func TestDevListNewestFirstAndAnyOrder(t *testing.T) {
	ds := testDevs(200)
	var l devList[busLinks]
	for _, d := range ds {
		l.push(d)
	}
	for i := len(ds) - 1; i >= 100; i-- {
		if l.tail != ds[i] {
			t.Fatalf("tail is %s, want the newest, %s", l.tail.name, ds[i].name)
		}
		l.remove(ds[i])
		checkList(t, &l, ds[:i])
	}
	rest := slices.Clone(ds[:100])
	for _, i := range []int{0, 99, 50, 1, 97, 2} { // head, tail, middle
		d := ds[i]
		l.remove(d)
		rest = slices.DeleteFunc(rest, func(x *Device) bool { return x == d })
		checkList(t, &l, rest)
	}
	if l.remove(ds[0]) {
		t.Fatal("a second remove reported true")
	}
	checkList(t, &l, rest)
}

// TestDevListRemoveFromAnotherListChangesNothing: a device on one driver's
// bound list is not taken off it by another driver's dropBound.
func TestDevListRemoveFromAnotherListChangesNothing(t *testing.T) {
	ds := testDevs(3)
	var a, b devList[boundLinks]
	for _, d := range ds {
		a.push(d)
	}
	if b.remove(ds[1]) {
		t.Fatal("remove from a list the device is not on reported true")
	}
	checkList(t, &a, ds)
	checkList(t, &b, nil)
	defer func() {
		if recover() == nil {
			t.Fatal("pushing a device already on a list of the same kind did not panic")
		}
		checkList(t, &a, ds) // misuse leaves the lists usable
		checkList(t, &b, nil)
	}()
	b.push(ds[0])
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
	checkList(t, &s.list, ds)
	s.remove(dup) // never added: changes nothing
	if s.byName["d1"] != ds[1] {
		t.Fatal("removing a non-member freed a member's name")
	}
	s.remove(ds[1])
	if !s.add(dup) {
		t.Fatal("name of a removed device not freed")
	}
	for _, d := range []*Device{ds[0], ds[2], dup} {
		s.remove(d)
	}
	if s.byName != nil || s.list.n != 0 {
		t.Fatal("emptied siblings keep their index")
	}
}
