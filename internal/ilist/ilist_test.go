package ilist_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/sever-dev/sever/internal/ilist"
)

// item is on up to two lists at once, as a device is on several.
type item struct {
	name string
	a, b ilist.Links[item]
}

func items(n int) []*item {
	xs := make([]*item, n)
	for i := range xs {
		xs[i] = &item{name: "x" + strconv.Itoa(i)}
	}
	return xs
}

func names(xs []*item) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.name
	}
	return out
}

// check fails unless l holds want, oldest first, the same read both ways,
// with its length and membership right.
func check(t *testing.T, l *ilist.List[item], want []*item, links func(*item) *ilist.Links[item]) {
	t.Helper()
	fwd := slices.Collect(l.All())
	if !slices.Equal(fwd, want) {
		t.Fatalf("oldest first the list holds %v, want %v", names(fwd), names(want))
	}
	back := slices.Collect(l.Backward())
	slices.Reverse(back)
	if !slices.Equal(back, want) {
		t.Fatalf("newest first the list holds %v reversed, want %v: its backward links disagree", names(back), names(want))
	}
	if l.Len() != len(want) {
		t.Fatalf("Len is %d, the list holds %d", l.Len(), len(want))
	}
	var front, backx *item
	if len(want) > 0 {
		front, backx = want[0], want[len(want)-1]
	}
	if l.Front() != front || l.Back() != backx {
		t.Fatal("Front or Back is not the oldest or newest element")
	}
	for _, x := range want {
		if !l.Contains(links(x)) {
			t.Fatalf("Contains(%s) is false for a member", x.name)
		}
	}
}

func onA(x *item) *ilist.Links[item] { return &x.a }

func TestZeroListIsEmpty(t *testing.T) {
	var l ilist.List[item]
	check(t, &l, nil, onA)
	x := &item{name: "x"}
	if l.Contains(&x.a) || l.Remove(&x.a) {
		t.Fatal("the zero list claims an unlinked entry")
	}
}

func TestPushBackKeepsOldestFirst(t *testing.T) {
	xs := items(5)
	var l ilist.List[item]
	for i, x := range xs {
		l.PushBack(x, &x.a)
		check(t, &l, xs[:i+1], onA)
	}
}

// TestRemoveTouchesOnlyNeighbours is the structural proof that Remove is
// O(1): removing one element rewrites only its own links and its two
// neighbours', whatever the list's length; every other element's links
// are unchanged (TestRemovedLinksHoldNoNeighbour checks the removed one's).
func TestRemoveTouchesOnlyNeighbours(t *testing.T) {
	xs := items(1000)
	var l ilist.List[item]
	for _, x := range xs {
		l.PushBack(x, &x.a)
	}
	before := make([]ilist.Links[item], len(xs))
	for i, x := range xs {
		before[i] = x.a
	}
	if !l.Remove(&xs[500].a) {
		t.Fatal("Remove of a member reported false")
	}
	for i, x := range xs {
		switch i {
		case 499, 500, 501: // relinked to each other; checked by check below
		default:
			if x.a != before[i] {
				t.Fatalf("removing x500 changed the links of x%d", i)
			}
		}
	}
	check(t, &l, slices.Delete(slices.Clone(xs), 500, 501), onA)
}

// TestRemoveInAnyOrder removes newest first, then head, tail and middle,
// checking the list after each step; a second Remove reports false.
func TestRemoveInAnyOrder(t *testing.T) {
	xs := items(40)
	var l ilist.List[item]
	for _, x := range xs {
		l.PushBack(x, &x.a)
	}
	for i := len(xs) - 1; i >= 20; i-- {
		if l.Back() != xs[i] || !l.Remove(&xs[i].a) {
			t.Fatalf("the newest is not %s, or it would not come off", xs[i].name)
		}
		check(t, &l, xs[:i], onA)
	}
	rest := slices.Clone(xs[:20])
	for _, i := range []int{0, 19, 10, 1, 17, 2} {
		x := xs[i]
		if !l.Remove(&x.a) {
			t.Fatalf("Remove of member %s reported false", x.name)
		}
		rest = slices.DeleteFunc(rest, func(y *item) bool { return y == x })
		check(t, &l, rest, onA)
	}
	if l.Remove(&xs[0].a) {
		t.Fatal("a second Remove reported true")
	}
	check(t, &l, rest, onA)
	for _, x := range rest {
		l.Remove(&x.a)
	}
	check(t, &l, nil, onA)
	l.PushBack(xs[3], &xs[3].a) // an emptied list is usable, a removed entry reusable
	check(t, &l, []*item{xs[3]}, onA)
}

// TestRemoveFromAnotherListChangesNothing: an entry on one list is not
// taken off it through another list of the same element type.
func TestRemoveFromAnotherListChangesNothing(t *testing.T) {
	xs := items(3)
	var l, other ilist.List[item]
	for _, x := range xs {
		l.PushBack(x, &x.a)
	}
	if other.Remove(&xs[1].a) || other.Contains(&xs[1].a) {
		t.Fatal("another list claims a member of l")
	}
	check(t, &l, xs, onA)
	check(t, &other, nil, onA)
}

// TestTakeAllEmptiesTheListInOnePass: TakeAll returns the elements oldest
// first and leaves the list empty and usable and every entry off it: a
// later Remove reports false, a later push succeeds.
func TestTakeAllEmptiesTheListInOnePass(t *testing.T) {
	xs := items(5)
	var l ilist.List[item]
	if got := l.TakeAll(); len(got) != 0 {
		t.Fatalf("TakeAll of the empty list returned %d elements", len(got))
	}
	for _, x := range xs {
		l.PushBack(x, &x.a)
	}
	if got := l.TakeAll(); !slices.Equal(got, xs) {
		t.Fatalf("TakeAll returned %v, want %v", names(got), names(xs))
	}
	check(t, &l, nil, onA)
	for _, x := range xs {
		if l.Contains(&x.a) || l.Remove(&x.a) {
			t.Fatalf("%s is still on the list after TakeAll", x.name)
		}
	}
	for _, x := range xs[:2] {
		l.PushBack(x, &x.a)
	}
	check(t, &l, xs[:2], onA)
}

// TestOneElementOnTwoLists: separate Links make separate memberships.
func TestOneElementOnTwoLists(t *testing.T) {
	xs := items(4)
	var la, lb ilist.List[item]
	for _, x := range xs {
		la.PushBack(x, &x.a)
	}
	for _, x := range slices.Backward(xs) {
		lb.PushBack(x, &x.b)
	}
	la.Remove(&xs[1].a)
	check(t, &la, []*item{xs[0], xs[2], xs[3]}, onA)
	check(t, &lb, []*item{xs[3], xs[2], xs[1], xs[0]}, func(x *item) *ilist.Links[item] { return &x.b })
}

func TestInsertAfter(t *testing.T) {
	xs := items(5)
	var l ilist.List[item]
	l.InsertAfter(xs[2], &xs[2].a, nil) // into the empty list
	check(t, &l, []*item{xs[2]}, onA)
	l.InsertAfter(xs[0], &xs[0].a, nil)      // first
	l.InsertAfter(xs[4], &xs[4].a, &xs[2].a) // after the newest: the newest
	l.InsertAfter(xs[1], &xs[1].a, &xs[0].a) // in the middle
	l.InsertAfter(xs[3], &xs[3].a, &xs[2].a)
	check(t, &l, xs, onA)
}

// mustPanic fails t unless fn panics.
func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s did not panic", what)
		}
	}()
	fn()
}

// TestMisuseIsLoudAndChangesNothing: adding an entry that is already on a
// list (this one or another), inserting after an entry not on the list and
// adding a nil element panic, and both lists stay as they were and usable.
func TestMisuseIsLoudAndChangesNothing(t *testing.T) {
	xs := items(4)
	var l, other ilist.List[item]
	for _, x := range xs[:3] {
		l.PushBack(x, &x.a)
	}
	other.PushBack(xs[3], &xs[3].a)
	mustPanic(t, "PushBack of a member onto its own list", func() { l.PushBack(xs[1], &xs[1].a) })
	mustPanic(t, "PushBack of a member of another list", func() { other.PushBack(xs[0], &xs[0].a) })
	mustPanic(t, "InsertAfter of a member", func() { other.InsertAfter(xs[2], &xs[2].a, &xs[3].a) })
	mustPanic(t, "InsertAfter an entry not on the list", func() { l.InsertAfter(xs[3], &xs[3].b, &xs[3].a) })
	fresh := &item{name: "fresh"}
	mustPanic(t, "PushBack of a nil element", func() { l.PushBack(nil, &fresh.a) })
	check(t, &l, xs[:3], onA)
	check(t, &other, xs[3:], onA)
	if fresh.a != (ilist.Links[item]{}) || xs[3].b != (ilist.Links[item]{}) {
		t.Fatal("a refused add changed the entry's links")
	}
	l.PushBack(fresh, &fresh.a) // still usable
	check(t, &l, append(slices.Clone(xs[:3]), fresh), onA)
}

// TestIterationMayRemoveTheYieldedElement: a loop that empties the list
// through All or Backward sees every element once; breaking stops early.
func TestIterationMayRemoveTheYieldedElement(t *testing.T) {
	for _, dir := range []string{"All", "Backward"} {
		xs := items(6)
		var l ilist.List[item]
		for _, x := range xs {
			l.PushBack(x, &x.a)
		}
		seq, want := l.All(), slices.Clone(xs)
		if dir == "Backward" {
			seq = l.Backward()
			slices.Reverse(want)
		}
		var got []*item
		for x := range seq {
			got = append(got, x)
			l.Remove(&x.a)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s while removing yielded %v, want %v", dir, names(got), names(want))
		}
		check(t, &l, nil, onA)
	}
	xs := items(3)
	var l ilist.List[item]
	for _, x := range xs {
		l.PushBack(x, &x.a)
	}
	n := 0
	for range l.Backward() {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("a loop that breaks at once saw %d elements", n)
	}
}

func Example() {
	type device struct {
		name  string
		onBus ilist.Links[device]
	}
	var bus ilist.List[device] // guarded by the bus's lock
	a, b, c := &device{name: "a"}, &device{name: "b"}, &device{name: "c"}
	for _, d := range []*device{a, b, c} {
		bus.PushBack(d, &d.onBus)
	}
	fmt.Println(bus.Remove(&b.onBus), bus.Remove(&b.onBus), bus.Len())
	for d := range bus.Backward() {
		fmt.Print(d.name, " ")
	}
	fmt.Println()
	// Output:
	// true false 2
	// c a
}
