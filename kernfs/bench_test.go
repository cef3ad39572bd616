package kernfs_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

func showValue(_ *kernfs.Call, buf []byte) ([]byte, error) {
	return strconv.AppendInt(buf, 12345, 10), nil
}

// BenchmarkShowDirect is the floor: the provider's Show called directly.
func BenchmarkShowDirect(b *testing.B) {
	buf := make([]byte, 0, kernfs.PageSize)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = showValue(nil, buf[:0])
	}
}

// BenchmarkReadOpenFile reads the attribute through an open file, as cat
// does after seeking to 0: seek, Show inside the node's active reference,
// copy out.
func BenchmarkReadOpenFile(b *testing.B) {
	for _, withOwner := range []bool{false, true} {
		b.Run(fmt.Sprintf("owner=%v", withOwner), func(b *testing.B) {
			t := kernfs.New()
			var o *sever.Owner
			if withOwner {
				o = sever.NewOwner("drv", nil)
			}
			n, _ := t.AddAttr(t.Root(), kernfs.Attr{Name: "value", Owner: o, Show: showValue})
			f, err := t.OpenNode(n, os.O_RDONLY)
			if err != nil {
				b.Fatal(err)
			}
			defer closeOK(b, f)
			p := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.ReadAt(p, 0); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadOpenFileParallel reads different attributes from every P:
// no tree-wide lock on the path.
func BenchmarkReadOpenFileParallel(b *testing.B) {
	t := kernfs.New()
	b.RunParallel(func(pb *testing.PB) {
		n, err := t.AddAttr(t.Root(), kernfs.Attr{Name: fmt.Sprintf("v%p", pb), Show: showValue})
		if err != nil {
			b.Error(err)
			return
		}
		f, _ := t.OpenNode(n, os.O_RDONLY)
		defer closeOK(b, f)
		p := make([]byte, 64)
		for pb.Next() {
			if _, err := f.ReadAt(p, 0); err != nil {
				b.Errorf("ReadAt of f = %v, want nil: the attribute is live", err)
				return
			}
		}
	})
}

// BenchmarkLookup resolves a four-level path.
func BenchmarkLookup(b *testing.B) {
	t := kernfs.New()
	d := t.Root()
	for _, name := range []string{"devices", "pci0000:00", "0000:00:14.0", "usb1"} {
		d, _ = t.AddDir(d, kernfs.Dir{Name: name})
	}
	if _, err := t.AddAttr(d, kernfs.Attr{Name: "value", Show: showValue}); err != nil {
		b.Fatalf("setup: AddAttr failed: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.Lookup("/devices/pci0000:00/0000:00:14.0/usb1/value"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRemoveSubtree removes a device of N nodes (directories of 100
// attributes) with one file open on each attribute. ns/op should grow
// linearly in N.
func BenchmarkRemoveSubtree(b *testing.B) {
	for _, size := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("%dk", size/1000), func(b *testing.B) {
			rel := func(*kernfs.Node, any) {}
			for b.Loop() {
				b.StopTimer()
				t := kernfs.New()
				owner := sever.NewOwner("drv", nil)
				top, _ := t.AddDir(t.Root(), kernfs.Dir{Name: "dev", Owner: owner})
				var files []*kernfs.File
				var dir *kernfs.Node
				for i := 0; len(files) < size; i++ {
					if i%100 == 0 {
						dir, _ = t.AddDir(top, kernfs.Dir{Name: "d" + strconv.Itoa(i), Owner: owner})
					}
					n, err := t.AddAttr(dir, kernfs.Attr{Name: "a" + strconv.Itoa(i), Owner: owner, Show: showValue, Release: rel})
					if err != nil {
						b.Fatal(err)
					}
					f, err := t.OpenNode(n, os.O_RDONLY)
					if err != nil {
						b.Fatal(err)
					}
					files = append(files, f)
				}
				b.StartTimer()
				if err := t.Remove(context.Background(), top); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				for _, f := range files {
					closeOK(b, f)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/node")
		})
	}
}
