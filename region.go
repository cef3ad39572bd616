package sever

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
)

// Region is memory a provider hands over to the framework because it must
// outlive the provider's unregistration: the pages tcmu maps into its
// daemon (seed 003), a binary attribute's mmap window, a char device's ring.
// The provider gives the memory, a Free function and its Owner; from then
// on the framework, not the provider, decides when the memory dies.
//
// Users hold the region in two ways: a Mapping (Map, ended by Unmap) and an
// open (Get, ended by Put), which a file shell takes for as long as it
// lives. The provider's unregistration is Sever. Free runs exactly once,
// when both have happened: the region is severed and its last user is
// gone — whichever comes last runs Free on its own goroutine.
//
//	live ──Sever──▶ severed ──last Unmap/Put──▶ freed
//	  (users ≥ 0)     (no new Map or Get)        (Free has run; owner unpinned)
//
// The region pins its owner from NewRegion until Free has returned, so the
// provider's Free is never called into a gone owner. The pin is explicit on
// purpose: an owner with a severed region still mapped cannot finish
// unloading (UnloadTry refuses with ErrBusy; UnloadForce waits until its
// context is done), exactly as a module stays while its pages are mapped.
//
// Without the framework, the provider must choose between freeing at
// unregister (the daemon faults on its mapping) and freeing at the last
// close (which uio never calls after unregistering, so tcmu leaked). With
// Region, the provider does neither: it calls nothing after Sever.
//
// A Region is safe for concurrent use. With WithLog, Free is registered as
// a check.Pending: never running it by quiesce is check.ReleaseNeverRun.
type Region struct {
	name    string
	mem     []byte
	free    func([]byte)
	owner   *Owner
	log     *check.Log
	pending *check.Pending

	mu      sync.Mutex
	users   int  // mappings + opens
	severed bool // Sever has been called
	freed   bool // Free has been started

	life *Lifeline // nil unless observed (WithObserver) or traced
}

// NewRegion hands mem to the framework under name. free, which may be nil,
// is the provider's code that gives mem back: it runs once, with mem, via
// owner.Call, after which the owner's pin is dropped. owner may be nil for
// built-in code that is never unloaded. NewRegion fails with an error
// wrapping ErrNoDevice if owner is not live.
func NewRegion(name string, mem []byte, free func([]byte), owner *Owner, opts ...Option) (*Region, error) {
	o := buildOptions(opts)
	r := &Region{name: name, mem: mem, free: free, owner: owner, log: o.log}
	if owner != nil && !owner.TryGet(r) {
		return nil, &ObjectError{Object: name, Err: fmt.Errorf("owner %s is %v: %w", owner.Name(), owner.State(), ErrNoDevice)}
	}
	r.pending = o.log.Expect(name, "Free of region")
	r.life = o.lifeline("region", name, "live")
	return r, nil
}

// Name returns the region's name.
func (r *Region) Name() string { return r.name }

// Len returns the size of the region in bytes.
func (r *Region) Len() int { return len(r.mem) }

// Map maps the region: the Mapping's Bytes stay valid, whatever happens to
// the provider, until Unmap. Map of a severed region fails with an error
// wrapping ErrNoDevice.
func (r *Region) Map() (*Mapping, error) {
	if err := r.Get(); err != nil {
		return nil, err
	}
	return &Mapping{r: r}, nil
}

// Get takes an open's hold on the region, which keeps it from being freed
// until the matching Put. It fails with an error wrapping ErrNoDevice once
// the region is severed.
func (r *Region) Get() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.severed {
		return &ObjectError{Object: r.name, Err: ErrNoDevice}
	}
	r.users++
	return nil
}

// Put drops a hold taken by Get. If the region is severed and this was its
// last user, Put runs Free before returning. Put without a hold panics.
func (r *Region) Put() {
	r.mu.Lock()
	r.users--
	if r.users < 0 {
		r.mu.Unlock()
		panic(fmt.Sprintf("sever: Region %q: Put without a matching Get", r.name))
	}
	last := r.severed && r.users == 0 && !r.freed
	if last {
		r.freed = true
	}
	r.mu.Unlock()
	if last {
		r.runFree()
	}
}

// Sever marks the region's provider gone: no new Map or Get succeeds, and
// Free runs as soon as no user is left — before Sever returns, if none is
// left now. Sever is idempotent.
func (r *Region) Sever() {
	r.mu.Lock()
	if r.severed {
		r.mu.Unlock()
		return
	}
	r.severed = true
	last := r.users == 0 && !r.freed
	if last {
		r.freed = true
	}
	users := r.users
	r.mu.Unlock()
	r.life.Emit(Event{Kind: EventSevered, State: "severed", N: users})
	if last {
		r.runFree()
	}
}

func (r *Region) runFree() {
	r.mu.Lock()
	mem := r.mem
	r.mem = nil
	r.mu.Unlock()
	if r.free != nil {
		if r.owner != nil {
			r.owner.Call(r.name+": Free", func() { r.free(mem) })
		} else {
			r.free(mem)
		}
	}
	r.pending.Done()
	r.life.Emit(Event{Kind: EventFreed, State: "freed"})
	if r.owner != nil {
		r.owner.Put(r)
	}
}

// Freed reports whether Free has run (or is running).
func (r *Region) Freed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.freed
}

// Users returns the number of mappings and opens holding the region. It is
// for reports and tests.
func (r *Region) Users() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users
}

// Mapping is one mapping of a Region, the user's side of an mmap. Its
// memory stays valid until Unmap, even after the provider is severed.
type Mapping struct {
	r        *Region
	unmapped atomic.Bool
}

// Bytes returns the mapped memory, or nil after Unmap.
func (m *Mapping) Bytes() []byte {
	if m.unmapped.Load() {
		return nil
	}
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	return m.r.mem
}

// Unmap ends the mapping; if the region is severed and this was its last
// user, Unmap runs Free before returning. A second Unmap returns an error
// wrapping ErrClosed and does nothing.
func (m *Mapping) Unmap() error {
	if m.unmapped.Swap(true) {
		return &ObjectError{Object: m.r.name, Err: fmt.Errorf("mapping already unmapped: %w", ErrClosed)}
	}
	m.r.Put()
	return nil
}
