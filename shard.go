package sever

import (
	"runtime"
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

// procPin and procUnpin give the current P's index, the same per-CPU hint
// sync.Pool uses. They are runtime functions the Go runtime keeps reachable
// by linkname for exactly this use (see go.dev/issue/67401). The index only
// picks a counter shard; a goroutine that migrates between the pin and the
// add still counts correctly, on another CPU's shard.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

func shardHint() uint32 {
	p := procPin()
	procUnpin()
	return uint32(p)
}

// cacheLine is the padding unit that keeps shards off each other's lines;
// 128 covers adjacent-line prefetch on x86 and the line size of arm64's
// larger cores.
const cacheLine = 128

// maxShards bounds an Active's memory on very wide machines: at most
// maxShards*cacheLine bytes per Active.
const maxShards = 64

type shard struct {
	n atomic.Int64
	_ [cacheLine - 8]byte
}

// shardCount returns the number of shards for a new counter: GOMAXPROCS
// rounded up to a power of two, at most maxShards.
func shardCount() int {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < maxShards {
		n <<= 1
	}
	return n
}
