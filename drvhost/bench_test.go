package drvhost_test

import (
	"context"
	"testing"
	"time"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
)

// localService runs the test host's calls in this process: the baseline
// of BenchmarkCall.
type localService map[string]drvhost.CallFunc

func (l localService) Call(ctx context.Context, m string, arg []byte) ([]byte, error) {
	return l[m](ctx, arg)
}

// BenchmarkCall is one consumer call through a device handle: into a
// provider in this process, and into the same call in a driver host.
//
//	go test -run '^$' -bench Call -count 10 ./drvhost | benchstat -col /where -
func BenchmarkCall(b *testing.B) {
	arg := []byte("0123456789abcdef")
	b.Run("where=in-process", func(b *testing.B) {
		core := device.NewCore("pc", new(check.Log))
		ctx := context.Background()
		d, err := core.Register(ctx, device.Config{Name: "widget"})
		if err != nil {
			b.Fatal(err)
		}
		p, err := device.NewProvider[drvhost.Service](d, "local", localService(widgetCalls(&widget{})))
		if err != nil {
			b.Fatal(err)
		}
		h, _ := p.Open("bench")
		benchCalls(b, h, arg)
		closeOK(b, "handle", h)
		if err := core.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("where=host", func(b *testing.B) {
		m := newMachine(b, drvhost.Config{})
		h := m.open("bench")
		benchCalls(b, h, arg)
		closeOK(b, "handle", h)
	})
}

func benchCalls(b *testing.B, h *device.Handle[drvhost.Service], arg []byte) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := call(h, ctx, "echo", arg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKillToLastWoken is the time from kill -9 of a host to the last
// of its blocked consumers returning (a call, an attribute read, a poll and
// a char device read), reported as wake-ns; the restart is not timed.
//
//	go test -run '^$' -bench KillToLastWoken -count 5 ./drvhost
func BenchmarkKillToLastWoken(b *testing.B) {
	m := newMachine(b, drvhost.Config{Policy: drvhost.RestartAlways, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := m.sup.WaitRunning(context.Background(), uint64(i)); err != nil {
			b.Fatal(err)
		}
		res, n, done := blockConsumers(b, m)
		b.StartTimer()
		if _, err := m.sup.Kill(); err != nil {
			b.Fatal(err)
		}
		killed := time.Now()
		var last time.Time
		for range n {
			r := <-res
			if r.took.After(last) {
				last = r.took
			}
		}
		total += last.Sub(killed)
		b.StopTimer()
		done()
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "wake-ns")
}
