package kernfs_test

import (
	"io"
	"os"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/kernfs"
)

type discardObserver struct{}

func (discardObserver) Observe(sever.Event) {}

// BenchmarkObserverReadOpenFile reads an attribute through an open file on
// a tree made without and with an observer: a read reports nothing, so the
// two should be equal within noise (compare them with benchstat).
func BenchmarkObserverReadOpenFile(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []sever.Option
	}{{"observer=none", nil}, {"observer=set", []sever.Option{sever.WithObserver(discardObserver{})}}} {
		b.Run(c.name, func(b *testing.B) {
			t := kernfs.New(c.opts...)
			n, _ := t.AddAttr(t.Root(), kernfs.Attr{Name: "value", Show: showValue})
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
