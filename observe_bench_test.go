package sever_test

import (
	"testing"

	"github.com/sever-dev/sever"
)

// discard is an Observer that keeps nothing.
type discard struct{}

func (discard) Observe(sever.Event) {}

// BenchmarkObserverEnterExit times Enter+Exit of a live Active made
// without and with an observer: the observer must cost the fast path
// nothing (compare the two with benchstat).
func BenchmarkObserverEnterExit(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []sever.Option
	}{{"observer=none", nil}, {"observer=set", []sever.Option{sever.WithObserver(discard{})}}} {
		b.Run(c.name, func(b *testing.B) {
			a := sever.NewActive("bench", c.opts...)
			b.ReportAllocs()
			for b.Loop() {
				t, _ := a.Enter()
				a.Exit(&t)
			}
		})
	}
}
