package sever_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// Rule: a Region's memory is freed by the framework exactly once, when it
// is severed and its last mapping and open are gone — in every order of
// (sever, unmap, close) — and stays intact until then.
func TestRegionFreedOnceAtTheLastOfSeverUnmapAndClose(t *testing.T) {
	orders := [][3]string{
		{"sever", "unmap", "close"}, {"sever", "close", "unmap"},
		{"unmap", "sever", "close"}, {"unmap", "close", "sever"},
		{"close", "sever", "unmap"}, {"close", "unmap", "sever"},
	}
	for _, order := range orders {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			log := &check.Log{}
			mem := []byte("ring")
			r, err := sever.NewRegion("tcmu0", mem, sever.WithLog(log))
			if err != nil {
				t.Fatal(err)
			}
			m, err := r.Map()
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Get(); err != nil { // the open
				t.Fatal(err)
			}
			for i, step := range order {
				if r.Freed() || string(mem) != "ring" {
					t.Fatalf("memory freed before step %d (%s): it must wait for sever, unmap and close", i, step)
				}
				switch step {
				case "sever":
					r.Sever()
					if _, err := r.Map(); !errors.Is(err, syscall.ENODEV) {
						t.Errorf("Map after Sever: %v, want ENODEV", err)
					}
					if err := r.Get(); !errors.Is(err, syscall.ENODEV) {
						t.Errorf("Get after Sever: %v, want ENODEV", err)
					}
				case "unmap":
					if string(m.Bytes()) != "ring" {
						t.Errorf("mapping lost its memory before Unmap")
					}
					if err := m.Unmap(); err != nil {
						t.Fatal(err)
					}
				case "close":
					r.Put()
				}
			}
			if !r.Freed() || !bytes.Equal(mem, make([]byte, 4)) || r.Len() != 0 {
				t.Errorf("after the last step: freed %v, memory %q, Len %d; want freed, cleared, 0", r.Freed(), mem, r.Len())
			}
			r.Sever()
			if err := m.Unmap(); !errors.Is(err, syscall.EBADF) {
				t.Errorf("second Unmap: %v, want EBADF", err)
			}
			if m.Bytes() != nil {
				t.Error("Bytes after Unmap is not nil")
			}
			if vs := log.Quiesce(context.Background()); len(vs) != 0 {
				t.Errorf("checker: %v (the free must be recorded exactly once)", vs)
			}
		})
	}
}

// Rule: a severed region with no user is freed by Sever itself.
func TestRegionUnusedIsFreedAtSever(t *testing.T) {
	log := &check.Log{}
	r, err := sever.NewRegion("unused", make([]byte, 8), sever.WithLog(log))
	if err != nil {
		t.Fatal(err)
	}
	r.Sever()
	if !r.Freed() {
		t.Error("an unused region was not freed by Sever")
	}
	if vs := log.Quiesce(context.Background()); len(vs) != 0 {
		t.Errorf("checker: %v", vs)
	}
}

// Rule: however Map, Unmap, Get, Put and Sever race, the memory is freed
// exactly once, after every mapping has let go, and a mapping never sees
// it freed.
func TestRegionConcurrentUsersNeverSeeItFreed(t *testing.T) {
	for range 20 {
		log := &check.Log{}
		mem := bytes.Repeat([]byte{0xa5}, 64)
		r, err := sever.NewRegion("ring", mem, sever.WithLog(log))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					if g%2 == 0 {
						m, err := r.Map()
						if err != nil {
							continue // severed
						}
						if b := m.Bytes(); len(b) != 64 || b[i%64] != 0xa5 {
							t.Errorf("a live mapping saw freed memory: %v", b)
						}
						if err := m.Unmap(); err != nil {
							t.Error(err)
						}
					} else if r.Get() == nil {
						r.Put()
					}
				}
			})
		}
		wg.Go(r.Sever)
		wg.Wait()
		if !r.Freed() || r.Users() != 0 {
			t.Fatalf("after every user left: freed %v, users %d", r.Freed(), r.Users())
		}
		if vs := log.Quiesce(context.Background()); len(vs) != 0 {
			t.Fatalf("checker: %v", vs)
		}
	}
}

// Rule: a Region never freed is reported at quiesce.
func TestRegionNeverFreedIsReported(t *testing.T) {
	log := &check.Log{}
	r, err := sever.NewRegion("leak", make([]byte, 1), sever.WithLog(log))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := r.Map()
	r.Sever()
	vs := log.Quiesce(context.Background())
	if len(vs) != 1 || vs[0].Class != check.ReleaseNeverRun {
		t.Errorf("quiesce with a mapped severed region: %v, want one release-never-run", vs)
	}
	if err := m.Unmap(); err != nil {
		t.Error(err)
	}
}

// Rule: bad input is EINVAL and hands nothing over.
func TestNewRegionRefusesBadInput(t *testing.T) {
	log := &check.Log{}
	for _, tc := range []struct {
		name string
		mem  []byte
	}{{"", make([]byte, 1)}, {"empty", nil}, {"empty", []byte{}}} {
		if r, err := sever.NewRegion(tc.name, tc.mem, sever.WithLog(log)); !errors.Is(err, syscall.EINVAL) || r != nil {
			t.Errorf("NewRegion(%q, %d bytes) = %v, %v; want EINVAL and no region", tc.name, len(tc.mem), r, err)
		}
	}
	if vs := log.Quiesce(context.Background()); len(vs) != 0 {
		t.Errorf("a refused NewRegion left something expected: %v", vs)
	}
}

// Rule: Put without a hold panics, changes nothing, and the region stays
// usable: a later Get, Sever and Put free it once.
func TestRegionPutWithoutGetPanicsAndChangesNothing(t *testing.T) {
	log := &check.Log{}
	r, err := sever.NewRegion("ring", make([]byte, 1), sever.WithLog(log))
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			msg, _ := recover().(string)
			if !strings.Contains(msg, `"ring": Put without a matching Get`) {
				t.Errorf("Put without Get panicked with %q", msg)
			}
		}()
		r.Put()
	}()
	if r.Users() != 0 || r.Freed() {
		t.Fatalf("the refused Put changed the region: users %d, freed %v", r.Users(), r.Freed())
	}
	if err := r.Get(); err != nil {
		t.Fatal(err)
	}
	r.Sever()
	if r.Freed() {
		t.Fatal("freed with an open still holding it")
	}
	r.Put()
	if !r.Freed() {
		t.Fatal("not freed at the last Put")
	}
	if vs := log.Quiesce(context.Background()); len(vs) != 0 {
		t.Errorf("checker: %v", vs)
	}
}

// A driver hands its ring to the framework and forgets it: no function to
// free it, no module to keep loaded. The daemon's mapping outlives the
// device; the framework frees the memory when the daemon lets go.
func ExampleRegion() {
	ring := make([]byte, 4096)
	r, _ := sever.NewRegion("tcmu0 ring", ring)

	m, _ := r.Map() // the daemon maps the ring
	r.Sever()       // the device is unregistered: the mapping stays valid
	fmt.Println(len(m.Bytes()), r.Freed())
	// the daemon lets go: the framework frees the ring
	if err := m.Unmap(); err != nil {
		fmt.Println(err)
	}
	fmt.Println(r.Freed())
	// Output:
	// 4096 false
	// true
}
