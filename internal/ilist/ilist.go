// Package ilist is an intrusive doubly linked list: the element embeds its
// links, so putting it on a list allocates nothing.
package ilist

import "iter"

// List is a doubly linked list of *T, oldest (front) to newest (back),
// threaded through a Links[T] that each element embeds: one Links field for
// each list the element can be on at once (a device is among its parent's
// children, on its bus and on its driver's list through three of them).
// PushBack, InsertAfter, Remove, Contains, Len, Front and Back are O(1)
// whatever the list's length, so adding and removing n elements costs O(n).
// The zero value is an empty list.
//
//	type dev struct {
//		name string
//		onBus ilist.Links[dev]
//	}
//	var bus ilist.List[dev]
//	bus.PushBack(d, &d.onBus)  // d is on bus
//	bus.Remove(&d.onBus)       // true: it was, and is off now
//	bus.Remove(&d.onBus)       // false: changes nothing
//
// The contract:
//   - A List is not safe for concurrent use: the lock of whoever holds the
//     list guards the list and the Links of every element on it.
//   - A Links is on at most one list at a time. Pushing or inserting one
//     that is already on a list (this one or another) is misuse and panics
//     before changing anything, so both lists stay usable.
//   - Remove of a Links that is not on the list is not misuse: it reports
//     false and changes nothing. Every user needs that answer — an open
//     file's Close races the sever that takes its scope's whole list, and a
//     device's removal takes it off lists it may never have joined — and
//     the answer is exact, because a Links records which list it is on.
//   - A List must not be copied once an element is on it.
type List[T any] struct {
	head, tail *Links[T]
	n          int
}

// Links is an element's place on one List: its neighbours there, the list
// it is on and the element itself. The element embeds it; the zero value
// is on no list. Only List's methods change it.
type Links[T any] struct {
	prev, next *Links[T]
	list       *List[T] // nil: on no list
	elem       *T
}

// PushBack appends x, whose links on this kind of list are e, as the newest.
// It panics if e is already on a list, or if x is nil.
func (l *List[T]) PushBack(x *T, e *Links[T]) {
	l.link(x, e, l.tail)
}

// InsertAfter puts x, whose links are e, right after at, which is on l;
// at nil puts it first (the oldest). It panics if e is already on a list,
// if at is not on l, or if x is nil.
func (l *List[T]) InsertAfter(x *T, e, at *Links[T]) {
	if at != nil && at.list != l {
		panic("ilist: InsertAfter an entry that is not on the list")
	}
	l.link(x, e, at)
}

// link puts e after at (nil: first).
func (l *List[T]) link(x *T, e, at *Links[T]) {
	if e.list != nil {
		panic("ilist: an entry already on a list was added to a list; it is on at most one at a time")
	}
	if x == nil {
		panic("ilist: a nil element was added to a list")
	}
	e.list, e.elem, e.prev = l, x, at
	if at == nil {
		e.next = l.head
		l.head = e
	} else {
		e.next = at.next
		at.next = e
	}
	if e.next != nil {
		e.next.prev = e
	} else {
		l.tail = e
	}
	l.n++
}

// Remove takes e off l and reports whether it was on l. If it was not (on
// no list, or on another one), Remove changes nothing. A removed e holds
// no neighbour and is on no list.
func (l *List[T]) Remove(e *Links[T]) bool {
	if e.list != l {
		return false
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	// elem stays: it points at the element e is in, so it keeps nothing
	// else alive, and leaving it saves a pointer write (a write barrier
	// while the GC runs) on every remove.
	e.prev, e.next, e.list = nil, nil, nil
	l.n--
	return true
}

// TakeAll empties l and returns its elements, oldest first, each off the
// list. It is Remove of every element, in one pass that rewrites no
// neighbour's links: the form for a sever that takes a whole list.
func (l *List[T]) TakeAll() []*T {
	out := make([]*T, 0, l.n)
	for e := l.head; e != nil; {
		next := e.next
		out = append(out, e.elem)
		e.prev, e.next, e.list = nil, nil, nil
		e = next
	}
	*l = List[T]{}
	return out
}

// Contains reports whether e is on l.
func (l *List[T]) Contains(e *Links[T]) bool { return e.list == l }

// Len returns the number of elements on l.
func (l *List[T]) Len() int { return l.n }

// Front returns the oldest element, or nil if l is empty.
func (l *List[T]) Front() *T {
	if l.head == nil {
		return nil
	}
	return l.head.elem
}

// Back returns the newest element, or nil if l is empty.
func (l *List[T]) Back() *T {
	if l.tail == nil {
		return nil
	}
	return l.tail.elem
}

// All yields the elements oldest first. The loop body may Remove the
// element it was just given (as a loop that empties the list does), but
// no other element, and must not add any.
func (l *List[T]) All() iter.Seq[*T] {
	return func(yield func(*T) bool) {
		for e := l.head; e != nil; {
			next := e.next
			if !yield(e.elem) {
				return
			}
			e = next
		}
	}
}

// Backward yields the elements newest first, under All's rules.
func (l *List[T]) Backward() iter.Seq[*T] {
	return func(yield func(*T) bool) {
		for e := l.tail; e != nil; {
			prev := e.prev
			if !yield(e.elem) {
				return
			}
			e = prev
		}
	}
}
