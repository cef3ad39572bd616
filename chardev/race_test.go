package chardev_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
)

// openState is the racing driver's per-open state.
type openState struct {
	id       int64
	releases atomic.Int32
}

// TestUnregisterRacingWithHundredUsersRunsEachReleaseOnceAndNoCallbackAfter
// races a device unregister against 100 goroutines opening, reading
// (blocking and not), polling, waiting, mapping and closing. The driver
// records any callback made after Unregister returned; check.Log's Pending
// records a Release run twice or never, and the region's Free run twice or
// never.
func TestUnregisterRacingWithHundredUsersRunsEachReleaseOnceAndNoCallbackAfter(t *testing.T) {
	for round := range 5 {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) { raceRound(t, int64(round)) })
	}
}

func raceRound(t *testing.T, seed int64) {
	m := newMachine(t)
	guard := &afterGuard{log: m.log}
	region := m.region("ring0 data")
	var avail atomic.Int32
	var opened, released atomic.Int64
	var mu sync.Mutex
	var states []*openState

	cd := m.register(chardev.Config{
		Name:    "ring0",
		Gone:    sever.ErrIO,
		Regions: []*sever.Region{region},
		Ops: chardev.Ops{
			Open: func(c *chardev.Call) (any, error) {
				guard.check("Open")
				s := &openState{id: opened.Add(1)}
				mu.Lock()
				states = append(states, s)
				mu.Unlock()
				return s, nil
			},
			Read: func(c *chardev.Call, b []byte) (int, error) {
				guard.check("Read")
				if c.Private().(*openState).releases.Load() != 0 {
					t.Error("Read on an open whose Release has run")
				}
				if avail.Add(-1) < 0 {
					avail.Add(1)
					return 0, sever.ErrWouldBlock
				}
				return copy(b, "d"), nil
			},
			Poll: func(c *chardev.Call) sever.Events {
				guard.check("Poll")
				if avail.Load() > 0 {
					return sever.EventIn
				}
				return 0
			},
			Mmap: func(c *chardev.Call, i int) error { guard.check("Mmap"); return nil },
			Release: func(c *chardev.Call) {
				guard.check("Release")
				c.Private().(*openState).releases.Add(1)
				released.Add(1)
			},
		},
	})

	// A producer keeps data coming so blocking reads and waits both
	// complete and block.
	stop := make(chan struct{})
	var prod sync.WaitGroup
	prod.Add(1)
	go func() {
		defer prod.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Microsecond):
			}
			avail.Add(1)
			cd.Notify(sever.EventIn)
		}
	}()

	const users = 100
	var wg sync.WaitGroup
	start := make(chan struct{})
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(u)))
			<-start
			var maps []*sever.Mapping
			defer func() {
				for _, mp := range maps {
					if mp.Bytes() == nil {
						t.Error("a mapping lost its memory before Unmap")
					}
					if err := mp.Unmap(); err != nil {
						t.Errorf("first Unmap of a mapping: %v", err)
					}
				}
			}()
			for range 20 {
				f, err := cd.Open(os.O_RDWR)
				if err != nil {
					if !errors.Is(err, syscall.EIO) {
						t.Errorf("Open = %v, want success or the chosen EIO", err)
					}
					return
				}
				for range 1 + rng.IntN(6) {
					var err error
					switch rng.IntN(5) {
					case 0:
						_, err = f.Read(make([]byte, 1))
					case 1:
						_, err = f.Poll()
					case 2:
						_, err = f.Wait(ctxT(t), sever.EventIn)
					case 3:
						var mp *sever.Mapping
						if mp, err = f.Mmap(0); err == nil {
							maps = append(maps, mp)
						}
					case 4:
						_, err = f.Write([]byte{1})
						if errors.Is(err, syscall.EINVAL) {
							err = nil // no Write op
						}
					}
					if err != nil && !errors.Is(err, syscall.EIO) {
						t.Errorf("operation = %v, want success or the chosen EIO", err)
					}
				}
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
				}
				if err := f.Close(); err != nil {
					t.Errorf("Close = %v, want nil before and after unregister", err)
				}
			}
		}()
	}
	close(start)
	// Unregister in the thick of it: once a few hundred opens have begun.
	for deadline := time.Now().Add(time.Second); opened.Load() < 100+50*seed && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
	openAtUnregister := opened.Load() - released.Load()
	if err := m.dev.Unregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	guard.done.Store(true)
	if n := cd.Opens(); n != 0 {
		t.Errorf("%d opens without a Release after Unregister returned", n)
	}
	if r, o := released.Load(), opened.Load(); r != o {
		t.Errorf("after Unregister returned %d Releases had run for %d opens, want all of them", r, o)
	}
	wg.Wait()
	close(stop)
	prod.Wait()

	mu.Lock()
	for _, s := range states {
		if n := s.releases.Load(); n != 1 {
			t.Errorf("open %d: Release ran %d times, want exactly once", s.id, n)
		}
	}
	mu.Unlock()
	if n := frees(region); n != 1 {
		t.Errorf("region freed %d times, want exactly once after unregister and the last unmap and close", n)
	}
	if p := m.owner.Pins(); p != 0 {
		t.Errorf("owner still pinned %d times after every release and free", p)
	}
	t.Logf("%d opens, about %d open when unregistered", opened.Load(), openAtUnregister)
	m.clean()
}

// TestRegionFreedOnceInEveryOrderOfUnregisterUnmapClose: the region's
// memory is freed exactly once, at the last of the three, whatever the order, and the
// mapping's memory stays valid until its Unmap.
func TestRegionFreedOnceInEveryOrderOfUnregisterUnmapClose(t *testing.T) {
	perms := [][3]string{
		{"unregister", "unmap", "close"},
		{"unregister", "close", "unmap"},
		{"unmap", "unregister", "close"},
		{"unmap", "close", "unregister"},
		{"close", "unregister", "unmap"},
		{"close", "unmap", "unregister"},
	}
	for _, p := range perms {
		t.Run(fmt.Sprint(p[0], "-", p[1], "-", p[2]), func(t *testing.T) {
			m := newMachine(t)
			r := m.region("ring data")
			cd := m.register(chardev.Config{Name: "ring0", Regions: []*sever.Region{r}})
			f := m.open(cd, os.O_RDWR)
			mp, err := f.Mmap(0)
			if err != nil {
				t.Fatal(err)
			}
			mp.Bytes()[0] = 42
			unmapped := false
			for i, step := range p {
				switch step {
				case "unregister":
					if err := m.dev.Unregister(ctxT(t)); err != nil {
						t.Fatal(err)
					}
				case "unmap":
					if err := mp.Unmap(); err != nil {
						t.Fatal(err)
					}
					unmapped = true
				case "close":
					if err := f.Close(); err != nil {
						t.Fatal(err)
					}
				}
				if !unmapped && (mp.Bytes() == nil || mp.Bytes()[0] != 42) {
					t.Errorf("after %v the mapping's memory is gone before Unmap (the SIGBUS seed 003 must not have)", p[:i+1])
				}
				want := int32(0)
				if i == 2 {
					want = 1
				}
				if n := frees(r); n != want {
					t.Errorf("after %v region freed %d times, want %d", p[:i+1], n, want)
				}
			}
			if m.owner.Pins() != 0 {
				t.Errorf("owner pinned %d times after the free, want 0: a region pins no owner", m.owner.Pins())
			}
			m.clean()
		})
	}
}
