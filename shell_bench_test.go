package sever

import (
	"context"
	"testing"
)

// openShells opens n shells on s, failing b on an error.
func openShells(b *testing.B, s *Scope, n int) []*Shell {
	b.Helper()
	shs := make([]*Shell, n)
	for i := range shs {
		sh, err := s.Open(nil, func() {})
		if err != nil {
			b.Fatal(err)
		}
		shs[i] = sh
	}
	return shs
}

// BenchmarkShellOpenClose measures one Open and its Close on a scope that
// already has `open` other shells: the scope's open list is touched twice
// and must cost the same whatever its length.
func BenchmarkShellOpenClose(b *testing.B) {
	for _, n := range []int{0, 1000} {
		b.Run("open="+itoa(n), func(b *testing.B) {
			s := NewScope("bench", nil)
			others := openShells(b, s, n)
			for b.Loop() {
				sh, err := s.Open(nil, func() {})
				if err != nil {
					b.Fatal(err)
				}
				_ = sh.Close()
			}
			for _, sh := range others {
				_ = sh.Close()
			}
		})
	}
}

// BenchmarkShellNotify measures a Notify that walks 1000 open shells.
func BenchmarkShellNotify(b *testing.B) {
	s := NewScope("bench", nil)
	shs := openShells(b, s, 1000)
	for b.Loop() {
		s.Notify(EventIn)
	}
	for _, sh := range shs {
		_ = sh.Close()
	}
}

// BenchmarkShellSever measures a Sever that takes and releases 1000 open
// shells.
func BenchmarkShellSever(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		s := NewScope("bench", nil)
		shs := openShells(b, s, 1000)
		b.StartTimer()
		_ = s.Sever(ctx)
		b.StopTimer()
		for _, sh := range shs {
			_ = sh.Close()
		}
		b.StartTimer()
	}
}
