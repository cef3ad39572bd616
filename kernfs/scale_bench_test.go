package kernfs_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/kernfs"
)

// The scale benchmarks of issue 13 target 3: Remove's cost per node must
// stay flat from 1k to 1M nodes. They use only the exported API, so the
// same file measures an older tree for comparison.

// scaleTree adds, under a directory "top", n nodes: n/10 directories of 9
// attributes each (the shape of sysfs: many small directories).
func scaleTree(b *testing.B, t *kernfs.Tree, n int) *kernfs.Node {
	b.Helper()
	top, err := t.AddDir(t.Root(), kernfs.Dir{Name: "top"})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n/10; i++ {
		d, err := t.AddDir(top, kernfs.Dir{Name: "d" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		for j := range 9 {
			if _, err := t.AddAttr(d, kernfs.Attr{Name: "a" + strconv.Itoa(j), Show: showValue}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return top
}

// BenchmarkScaleRemove removes a subtree of n nodes with one Remove.
func BenchmarkScaleRemove(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				t := kernfs.New()
				top := scaleTree(b, t, n)
				runtime.GC()
				b.StartTimer()
				c0 := cpuNow()
				if err := t.Remove(context.Background(), top); err != nil {
					b.Fatal(err)
				}
				cpu += cpuNow() - c0
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/node")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/node")
		})
	}
}

// BenchmarkScaleRemoveFlat removes one directory holding n attributes.
func BenchmarkScaleRemoveFlat(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				t := kernfs.New()
				top, _ := t.AddDir(t.Root(), kernfs.Dir{Name: "top"})
				for j := range n {
					if _, err := t.AddAttr(top, kernfs.Attr{Name: "a" + strconv.Itoa(j), Show: showValue}); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				b.StartTimer()
				c0 := cpuNow()
				if err := t.Remove(context.Background(), top); err != nil {
					b.Fatal(err)
				}
				cpu += cpuNow() - c0
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/node")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/node")
		})
	}
}

// cpuNow returns the process's CPU time, user and system, every thread
// (the collector's too). Unlike wall time it is not inflated by other
// processes on a shared machine, so it is reported beside it.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkScaleMemIdleNode reports the heap kept per idle node (a
// directory's attribute, with its scope), from runtime.MemStats.
func BenchmarkScaleMemIdleNode(b *testing.B) {
	const n = 100_000
	for i := 0; i < b.N; i++ {
		t := kernfs.New()
		before := liveHeap()
		top := scaleTree(b, t, n)
		after := liveHeap()
		b.ReportMetric(float64(int64(after)-int64(before))/n, "B/node")
		if err := t.Remove(context.Background(), top); err != nil {
			b.Errorf("Remove of the subtree = %v, want nil: no callback is stuck", err)
		}
	}
}

// BenchmarkScaleMemOpenFile reports the heap kept per open file (a shell
// of the node's scope) of an attribute.
func BenchmarkScaleMemOpenFile(b *testing.B) {
	const n = 10_000
	for i := 0; i < b.N; i++ {
		t := kernfs.New()
		a, err := t.AddAttr(t.Root(), kernfs.Attr{Name: "a", Show: showValue})
		if err != nil {
			b.Fatal(err)
		}
		fs := make([]*kernfs.File, n) // not counted
		before := liveHeap()
		for j := range fs {
			if fs[j], err = t.OpenNode(a, os.O_RDONLY); err != nil {
				b.Fatal(err)
			}
		}
		after := liveHeap()
		b.ReportMetric(float64(int64(after)-int64(before))/n, "B/file")
		if err := t.Remove(context.Background(), a); err != nil {
			b.Errorf("Remove of the subtree = %v, want nil: no callback is stuck", err)
		}
		for _, f := range fs {
			closeOK(b, f)
		}
	}
}
