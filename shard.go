package sever

import (
	"runtime"
	"sync/atomic"
	"unsafe"
	_ "unsafe" // for go:linkname
)

// procPin and procUnpin give the current P's index, the same per-CPU hint
// sync.Pool uses. They are runtime functions the Go runtime keeps reachable
// by linkname for exactly this use (see go.dev/issue/67401). The index only
// picks a counter shard; a goroutine that migrates between the pin and the
// CAS still counts correctly, in a slot of another CPU's shard.
//
// Enter calls them directly rather than through a helper: each is a call
// the compiler cannot inline, and a helper making both would be a third.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// cacheLine is the padding unit that keeps shards off each other's lines;
// 128 covers adjacent-line prefetch on x86 and the line size of arm64's
// larger cores.
const cacheLine = 128

// maxShards bounds an Active's memory on very wide machines: at most
// maxShards*cacheLine bytes per Active (plus spill blocks, below).
const maxShards = 64

// slotsPerShard is how many slot words fill a shard's cache line.
const slotsPerShard = cacheLine / 8

// A slot holds at most one access. Its word is even while the slot is free
// and odd while an access is inside it, and every change adds one: the word
// is a generation as well as a flag, so the odd value an Enter stored names
// that one access until its Exit (a compare-and-swap from that value)
// and never again. A stale copy of a Token carries an odd value the slot no
// longer holds; its Exit's compare-and-swap fails and changes nothing. The
// generation wraps after 2^63 accesses to one slot.
type slot = atomic.Uint64

// A shard is one CPU's cache line of slots. Accesses on one CPU are usually
// one at a time, so an Enter tries its shard's first slot and scans further
// only when that one is taken (an access blocked inside, a goroutine that
// migrated).
type shard struct {
	slots [slotsPerShard]slot
}

// A spill block holds accesses when every shard slot is taken (many
// goroutines blocked inside at once). Blocks are appended to the Active's
// chain, never removed, and summed after the shards.
type spill struct {
	shard
	next atomic.Pointer[spill]
}

// shardCount returns the number of shards for a new Active: GOMAXPROCS
// rounded up to a power of two, at most maxShards.
func shardCount() int {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < maxShards {
		n <<= 1
	}
	return n
}

// within reports whether s is one of the slots of sh.
func within(s *slot, sh []shard) bool {
	return uintptr(unsafe.Pointer(s))-uintptr(unsafe.Pointer(unsafe.SliceData(sh))) < uintptr(len(sh))*cacheLine
}
