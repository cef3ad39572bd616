package sever_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
)

// Rule: a Region's Free runs exactly once, when it is severed and its last
// mapping and open are gone — in every order of (sever, unmap, close) — and
// its owner stays pinned until then.
func TestRegionFreeRunsOnceInEveryOrder(t *testing.T) {
	orders := [][3]string{
		{"sever", "unmap", "close"}, {"sever", "close", "unmap"},
		{"unmap", "sever", "close"}, {"unmap", "close", "sever"},
		{"close", "sever", "unmap"}, {"close", "unmap", "sever"},
	}
	for _, order := range orders {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			log := &check.Log{}
			owner := sever.NewOwner("tcmu", nil, sever.WithLog(log))
			var frees atomic.Int32
			var freedMem []byte
			mem := []byte("ring")
			r, err := sever.NewRegion("tcmu0", mem, func(b []byte) { frees.Add(1); freedMem = b }, owner, sever.WithLog(log))
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
				if frees.Load() != 0 {
					t.Fatalf("Free ran before step %d (%s): it must wait for sever, unmap and close", i, step)
				}
				if owner.Pins() != 1 {
					t.Fatalf("owner pins %d before Free, want 1", owner.Pins())
				}
				switch step {
				case "sever":
					r.Sever()
					if _, err := r.Map(); !errors.Is(err, syscall.ENODEV) {
						t.Errorf("Map after Sever: %v, want ENODEV", err)
					}
				case "unmap":
					if string(m.Bytes()) != "ring" {
						t.Errorf("mapping lost its memory before Unmap")
					}
					m.Unmap()
				case "close":
					r.Put()
				}
			}
			if frees.Load() != 1 || string(freedMem) != "ring" {
				t.Errorf("Free ran %d times with %q; want once with the region's memory", frees.Load(), freedMem)
			}
			if owner.Pins() != 0 {
				t.Errorf("owner still pinned %d times after Free", owner.Pins())
			}
			r.Sever()
			if err := m.Unmap(); !errors.Is(err, syscall.EBADF) {
				t.Errorf("second Unmap: %v, want EBADF", err)
			}
			if m.Bytes() != nil {
				t.Error("Bytes after Unmap is not nil")
			}
			if frees.Load() != 1 {
				t.Errorf("Free ran again: %d", frees.Load())
			}
			if vs := log.Quiesce(context.Background()); len(vs) != 0 {
				t.Errorf("checker: %v", vs)
			}
		})
	}
}

// Rule: a Region never freed is reported at quiesce.
func TestRegionNeverFreedIsReported(t *testing.T) {
	log := &check.Log{}
	r, err := sever.NewRegion("leak", make([]byte, 1), nil, nil, sever.WithLog(log))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := r.Map()
	r.Sever()
	vs := log.Quiesce(context.Background())
	if len(vs) != 1 || vs[0].Class != check.ReleaseNeverRun {
		t.Errorf("quiesce with a mapped severed region: %v, want one release-never-run", vs)
	}
	m.Unmap()
}

// Rule: a Region cannot be handed over by an owner already unloading.
func TestRegionOfGoneOwnerIsRefused(t *testing.T) {
	o := sever.NewOwner("gone", nil)
	if err := o.Unload(context.Background(), sever.UnloadTry); err != nil {
		t.Fatal(err)
	}
	if _, err := sever.NewRegion("r", nil, nil, o); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("NewRegion of a gone owner: %v, want ENODEV", err)
	}
}

func ExampleRegion() {
	owner := sever.NewOwner("tcmu", nil)
	ring := make([]byte, 4096)
	r, _ := sever.NewRegion("tcmu0 ring", ring, func([]byte) { fmt.Println("ring freed") }, owner)

	m, _ := r.Map() // the daemon maps the ring
	r.Sever()       // the device is unregistered: the mapping stays valid
	fmt.Println(len(m.Bytes()))
	m.Unmap() // the daemon lets go: now Free runs
	// Output:
	// 4096
	// ring freed
}
