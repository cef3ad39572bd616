package ilist

import "testing"

type elem struct{ l Links[elem] }

// TestRemovedLinksHoldNoNeighbour: an entry taken off a list, by Remove or
// TakeAll, points at no neighbour (it would keep them alive) and at no list.
func TestRemovedLinksHoldNoNeighbour(t *testing.T) {
	var l List[elem]
	xs := []*elem{{}, {}, {}, {}}
	for _, x := range xs {
		l.PushBack(x, &x.l)
	}
	l.Remove(&xs[1].l)
	off := []*elem{xs[1]}
	l.Remove(&xs[3].l) // the tail
	off = append(off, xs[3])
	l.TakeAll()
	off = append(off, xs[0], xs[2])
	for i, x := range off {
		if x.l.prev != nil || x.l.next != nil || x.l.list != nil {
			t.Fatalf("entry %d taken off still links %p, %p, list %p", i, x.l.prev, x.l.next, x.l.list)
		}
	}
}
