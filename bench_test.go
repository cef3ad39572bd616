package sever

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// The Enter+Exit benchmarks compare Active with what else could guard a
// provider call: a sync.RWMutex read lock, a single shared atomic counter
// with a state check (the shape of gVisor's pkg/gate), a bare sharded
// counter with Active's shard choice and no protocol at all (the floor for
// any per-CPU counting scheme), and Active's own protocol written inline in
// the loop (what Enter+Exit would cost with no call and no misuse checks).
// Each has a serial and a parallel form; run with -cpu 1,2 and compare
// ratios within one run (see BENCHMARKS.md).

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
	b.Run("impl=active-do", func(b *testing.B) {
		a := NewActive("bench")
		fn := opaqueFn()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = a.Do(fn) // a is never severed and fn returns nil: so does Do
			}
		})
	})
	b.Run("impl=active-fn", func(b *testing.B) {
		// Enter, the same call Do makes, Exit: Do's fair baseline.
		a := NewActive("bench")
		fn := opaqueFn()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				t, ok := a.Enter()
				if ok {
					_ = fn() // returns nil
				}
				a.Exit(&t)
			}
		})
	})
	b.Run("impl=protocol-inline", func(b *testing.B) {
		a := NewActive("bench")
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s, w := protocolEnter(a)
				protocolExit(a, s, w)
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
	b.Run("impl=rwmutex", func(b *testing.B) {
		var mu sync.RWMutex
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.RLock()
				mu.RUnlock() //lint:ignore SA2001 the empty read section is what is measured
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
	b.Run("impl=active-do", func(b *testing.B) {
		a := NewActive("bench")
		fn := opaqueFn()
		for b.Loop() {
			_ = a.Do(fn) // a is never severed and fn returns nil: so does Do
		}
	})
	b.Run("impl=active-fn", func(b *testing.B) {
		a := NewActive("bench")
		fn := opaqueFn()
		for b.Loop() {
			t, ok := a.Enter()
			if ok {
				_ = fn() // returns nil
			}
			a.Exit(&t)
		}
	})
	b.Run("impl=protocol-inline", func(b *testing.B) {
		a := NewActive("bench")
		for b.Loop() {
			s, w := protocolEnter(a)
			protocolExit(a, s, w)
		}
	})
	b.Run("impl=sharded", func(b *testing.B) {
		c := newSharded()
		for b.Loop() {
			i := c.inc()
			c.dec(i)
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

// opaqueFn returns a function the compiler cannot see through, so the
// benchmarks' calls of it are real calls, as Do's call of its argument is.
func opaqueFn() func() error {
	fns := []func() error{func() error { return nil }}
	return fns[len(fns)-1]
}

// protocolEnter and protocolExit are Active's fast paths with nothing else:
// no slow path, no misuse checks (the benchmarks never take either). They
// are inlined into the benchmark loop.
func protocolEnter(a *Active) (*slot, uint64) {
	var p uint32
	if a.mask != 0 {
		p = uint32(procPin()) & a.mask
		procUnpin()
	}
	s := &a.shards[p].slots[0]
	if w := s.Load(); w&1 == 0 && s.CompareAndSwap(w, w+1) { // E1
		return s, w + 1
	}
	// Another goroutine holds this CPU's first slot (one of them moved
	// CPUs between its pin and its CAS): take any free slot, as Enter's
	// slow path does.
	return a.takeSlot(p)
}

func protocolExit(a *Active, s *slot, w uint64) {
	if a.state.Load() != activeLive { // E2, checked once per access as Enter does
		panic("benchmark Active severed")
	}
	if s.CompareAndSwap(w, w+1) && a.state.Load() == activeLive { // X1, X2
		return
	}
	panic("benchmark Active severed")
}

func BenchmarkRevocableAccess(b *testing.B) {
	r := NewRevocable("bench", 1, nil)
	fn := func(int) error { return nil }
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = r.Access(fn) // r is never revoked and fn returns nil: so does Access
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
				_ = as[j].Sever(ctx) // nothing is inside: Sever cannot wait, so cannot fail
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
				_ = a.Sever(ctx) // Background: waits until the accessors, woken by the sever, leave; no error
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
// Active (one counter in each shard's first word), and nothing else.
type sharded struct {
	mask   uint32
	shards []shard
}

func newSharded() *sharded {
	n := shardCount()
	return &sharded{mask: uint32(n - 1), shards: make([]shard, n)}
}

func (s *sharded) inc() *slot {
	var p uint32
	if s.mask != 0 {
		p = uint32(procPin()) & s.mask
		procUnpin()
	}
	c := &s.shards[p].slots[0]
	c.Add(1)
	return c
}

func (s *sharded) dec(c *slot) { c.Add(^uint64(0)) }
