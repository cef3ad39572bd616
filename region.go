package sever

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sever-dev/sever/check"
)

// Region is memory a provider hands over to the framework because it must
// outlive the provider's unregistration: the pages tcmu maps into its
// daemon (DESIGN.md, "Seed 003"), a binary attribute's mmap window, a char
// device's ring. From NewRegion on the memory is the framework's, not the
// provider's: the provider gives no function to free it and no owner to
// keep loaded, and no code of the provider runs for the region ever again.
//
// Users hold the region in two ways: a Mapping (Map, ended by Unmap) and an
// open (Get, ended by Put), which a file shell takes for as long as it
// lives. The provider's unregistration is Sever. The memory is freed —
// by the region itself: every reference to it dropped and its bytes
// cleared — exactly once, when both have happened: the region is severed
// and its last user is gone. Whichever of Sever, the last Unmap and the
// last Put comes last does it, on its own goroutine, before returning.
//
//	live ──Sever──▶ severed ──last Unmap/Put──▶ freed
//	  (users ≥ 0)     (no new Map or Get)        (memory cleared and dropped)
//
// Because the region never calls the provider, it pins no owner: a module
// whose device is severed can unload at once, even while a process still
// maps the device's memory (DESIGN.md, "Regions"). The rejected
// alternative — a provider callback at the last close, which keeps the
// module loaded until a process lets go — is exactly what this type
// replaces.
//
// Freeing clears the memory: a user who kept the slice from Bytes past
// its Unmap reads zeros, and under the race detector its access races with
// the clearing — a use after free made loud.
//
// A Region is safe for concurrent use. With WithLog, the freeing is
// registered as a check.Pending: a region never freed by quiesce is
// check.ReleaseNeverRun, one freed twice check.ReleaseTwice.
type Region struct {
	name    string
	pending *check.Pending

	mu      sync.Mutex
	mem     []byte // nil once freed
	users   int    // mappings + opens
	severed bool   // Sever has been called
	freed   bool   // the memory has been freed

	life *Lifeline // nil unless observed (WithObserver) or traced
}

// NewRegion hands mem to the framework under name (for reports: "tcmu0:
// data area"). The caller must not touch mem afterwards except through a
// Mapping. NewRegion fails with an error wrapping ErrInvalid, and takes
// nothing, if name is empty or mem has no bytes.
func NewRegion(name string, mem []byte, opts ...Option) (*Region, error) {
	if name == "" {
		return nil, &ObjectError{Object: "region", Err: fmt.Errorf("empty name: %w", ErrInvalid)}
	}
	if len(mem) == 0 {
		return nil, &ObjectError{Object: name, Err: fmt.Errorf("no memory to hand over: %w", ErrInvalid)}
	}
	o := buildOptions(opts)
	return &Region{name: name, mem: mem, pending: o.log.Expect(name, "free of region memory"), life: o.lifeline("region", name, "live")}, nil
}

// Name returns the region's name.
func (r *Region) Name() string { return r.name }

// Len returns the size of the region in bytes, 0 once it is freed.
func (r *Region) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mem)
}

// Map maps the region: the Mapping's Bytes stay valid, whatever happens to
// the provider, until Unmap. Map of a severed region fails with an error
// wrapping ErrNoDevice.
func (r *Region) Map() (*Mapping, error) {
	if err := r.Get(); err != nil {
		return nil, err
	}
	return &Mapping{r: r}, nil
}

// Get takes an open's hold on the region, which keeps its memory until the
// matching Put. It fails with an error wrapping ErrNoDevice once the
// region is severed.
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
// last user, Put frees the memory before returning. Put without a hold
// panics and changes nothing.
func (r *Region) Put() {
	r.mu.Lock()
	if r.users == 0 {
		r.mu.Unlock()
		panic(fmt.Sprintf("sever: Region %q: Put without a matching Get", r.name))
	}
	r.users--
	mem := r.takeIfLastLocked()
	r.mu.Unlock()
	r.free(mem)
}

// Sever marks the region's provider gone: no new Map or Get succeeds, and
// the memory is freed as soon as no user is left — before Sever returns,
// if none is left now. Sever is idempotent and never waits.
func (r *Region) Sever() {
	r.mu.Lock()
	r.severed = true
	mem := r.takeIfLastLocked()
	users := r.users
	r.mu.Unlock()
	r.life.Emit(Event{Kind: EventSevered, State: "severed", N: users})
	r.free(mem)
}

// takeIfLastLocked moves the region to freed if it is severed and unused,
// and returns the memory to clear; nil otherwise.
func (r *Region) takeIfLastLocked() []byte {
	if !r.severed || r.users != 0 || r.freed {
		return nil
	}
	r.freed = true
	mem := r.mem
	r.mem = nil
	return mem
}

// free is the framework's free of the region's memory: it clears it (the
// last reference the region held is already dropped) and marks the
// release done. mem is nil unless this call moved the region to freed.
func (r *Region) free(mem []byte) {
	if mem == nil {
		return
	}
	clear(mem)
	r.pending.Done()
	r.life.Emit(Event{Kind: EventFreed, State: "freed"})
}

// Freed reports whether the memory has been freed.
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
// memory stays valid until Unmap, even after the provider is severed and
// its owner unloaded.
type Mapping struct {
	r        *Region
	unmapped atomic.Bool
}

// Bytes returns the mapped memory, or nil after Unmap. The slice must not
// be used after Unmap.
func (m *Mapping) Bytes() []byte {
	if m.unmapped.Load() {
		return nil
	}
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	return m.r.mem
}

// Unmap ends the mapping; if the region is severed and this was its last
// user, Unmap frees the memory before returning. A second Unmap returns an
// error wrapping ErrClosed and does nothing.
func (m *Mapping) Unmap() error {
	if m.unmapped.Swap(true) {
		return &ObjectError{Object: m.r.name, Err: fmt.Errorf("mapping already unmapped: %w", ErrClosed)}
	}
	m.r.Put()
	return nil
}
