package sever

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// The Enter+Exit benchmarks compare Active with what else could guard a
// provider call: a sync.RWMutex read lock, a single shared atomic counter
// with a state check (the shape of gVisor's pkg/gate), and a bare sharded
// counter with no protocol at all (the floor for any counting scheme).
// Each has a serial and a parallel form; run with -cpu 1,2.

func BenchmarkEnterExit(b *testing.B) {
	b.Run("impl=active", func(b *testing.B) {
		a := NewActive("bench")
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				t, _ := a.Enter()
				a.Exit(&t)
			}
		})
	})
	b.Run("impl=rwmutex", func(b *testing.B) {
		var mu sync.RWMutex
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.RLock()
				mu.RUnlock() //lint:ignore SA2001 the empty read section is what is measured
			}
		})
	})
	b.Run("impl=gate", func(b *testing.B) {
		var g gate
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if g.enter() {
					g.leave()
				}
			}
		})
	})
	b.Run("impl=sharded", func(b *testing.B) {
		c := newSharded()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := c.inc()
				c.dec(i)
			}
		})
	})
}

func BenchmarkEnterExitSerial(b *testing.B) {
	b.Run("impl=active", func(b *testing.B) {
		a := NewActive("bench")
		for b.Loop() {
			t, _ := a.Enter()
			a.Exit(&t)
		}
	})
	b.Run("impl=atomic-pair", func(b *testing.B) {
		var n atomic.Int64
		for b.Loop() {
			n.Add(1)
			n.Add(-1)
		}
	})
}

func BenchmarkRevocableAccess(b *testing.B) {
	r := NewRevocable("bench", 1, nil)
	fn := func(int) error { return nil }
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Access(fn)
		}
	})
}

// BenchmarkSever measures the latency of Sever: with nothing in flight, and
// with n accesses inside that exit as soon as severing begins.
func BenchmarkSever(b *testing.B) {
	b.Run("inflight=0", func(b *testing.B) {
		const batch = 1024
		as := make([]*Active, batch)
		ctx := context.Background()
		for i := 0; i < b.N; i += batch {
			b.StopTimer()
			for j := range as {
				as[j] = NewActive("bench")
			}
			b.StartTimer()
			for j := 0; j < batch && i+j < b.N; j++ {
				as[j].Sever(ctx)
			}
		}
	})
	for _, n := range []int{1, 8, 64} {
		b.Run("inflight="+itoa(n), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				a := NewActive("bench")
				var ready sync.WaitGroup
				var done sync.WaitGroup
				for range n {
					ready.Add(1)
					done.Add(1)
					go func() {
						defer done.Done()
						t, _ := a.Enter()
						ready.Done()
						<-a.Severed()
						a.Exit(&t)
					}()
				}
				ready.Wait()
				b.StartTimer()
				a.Sever(ctx)
				b.StopTimer()
				done.Wait()
				b.StartTimer()
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for ; n > 0; n /= 10 {
		i--
		buf[i] = byte('0' + n%10)
	}
	return string(buf[i:])
}

// gate is the single-counter protocol of gVisor's pkg/gate: one shared
// atomic word, closed by a high bit.
type gate struct{ n atomic.Int64 }

const gateClosed = 1 << 62

func (g *gate) enter() bool {
	if g.n.Add(1) >= gateClosed {
		g.n.Add(-1)
		return false
	}
	return true
}

func (g *gate) leave() { g.n.Add(-1) }

// sharded is a bare per-CPU counter: the same shards and shard choice as
// Active, and nothing else.
type sharded struct {
	mask   uint32
	shards []shard
}

func newSharded() *sharded {
	n := shardCount()
	return &sharded{mask: uint32(n - 1), shards: make([]shard, n)}
}

func (s *sharded) inc() uint32 {
	i := shardHint() & s.mask
	s.shards[i].n.Add(1)
	return i
}

func (s *sharded) dec(i uint32) { s.shards[i].n.Add(-1) }
