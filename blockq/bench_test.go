package blockq_test

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/sever-dev/sever/blockq"
)

// The two benchmarks below do the same work in the same shape, so that
// benchstat can compare them (benchstat -col .name): GOMAXPROCS submitters
// each send one reused request at a time, synchronously, to GOMAXPROCS
// workers through a buffer of GOMAXPROCS slots; each request's work is
// benchWork on 64 bytes. BenchmarkChannelQueue is the plain channel queue
// with none of blockq's guarantees (no freeze, no kill, no panic recovery);
// the difference is what they cost.

func benchWork(data []byte) error {
	var x byte
	for _, c := range data {
		x ^= c
	}
	data[0] = x + 1
	return nil
}

func BenchmarkSubmit(b *testing.B) {
	q := blockq.New("bench", blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		return benchWork(rq.Data)
	}), runtime.GOMAXPROCS(0))
	defer func() {
		if err := q.Kill(context.Background()); err != nil {
			b.Errorf("kill: %v", err)
		}
	}()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rq := &blockq.Request{Op: blockq.OpWrite, Data: make([]byte, 64)}
		for pb.Next() {
			if err := q.Submit(ctx, rq); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

type chanRequest struct {
	data []byte
	err  error
	done chan struct{}
}

func BenchmarkChannelQueue(b *testing.B) {
	depth := runtime.GOMAXPROCS(0)
	reqs := make(chan *chanRequest, depth)
	var wg sync.WaitGroup
	for range depth {
		wg.Go(func() {
			for r := range reqs {
				r.err = benchWork(r.data)
				r.done <- struct{}{}
			}
		})
	}
	defer wg.Wait()
	defer close(reqs)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := &chanRequest{data: make([]byte, 64), done: make(chan struct{}, 1)}
		for pb.Next() {
			reqs <- r
			<-r.done
			if r.err != nil {
				b.Error(r.err)
				return
			}
		}
	})
}
