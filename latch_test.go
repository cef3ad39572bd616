package sever

import (
	"sync"
	"testing"
)

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A latch's channel closes at close whether it was asked for before or
// after; close is idempotent; racing done and close never lose the close
// nor close twice.
func TestLatchClosesEveryChannelItGave(t *testing.T) {
	var before latch
	ch := before.done()
	if isClosed(ch) {
		t.Fatal("an open latch gave a closed channel")
	}
	before.close()
	before.close()
	if !isClosed(ch) || !isClosed(before.done()) {
		t.Fatal("a channel asked for before close is not closed after it")
	}
	var after latch
	after.close()
	if !isClosed(after.done()) {
		t.Fatal("a channel asked for after close is not closed")
	}
	for range 200 {
		var l latch
		var wg sync.WaitGroup
		chs := make([]<-chan struct{}, 4)
		for i := range chs {
			wg.Go(func() { chs[i] = l.done() })
		}
		wg.Go(l.close)
		wg.Go(l.close)
		wg.Wait()
		for _, ch := range chs {
			if !isClosed(ch) {
				t.Fatal("a channel given while closing raced was never closed")
			}
		}
	}
}

// An Active severed with nobody asking for its channels makes none.
func TestSeverWithNobodyWaitingMakesNoChannel(t *testing.T) {
	a := NewActive("x")
	if err := a.Sever(t.Context()); err != nil {
		t.Fatal(err)
	}
	if a.begun.ch != nil || a.drained.ch != nil {
		t.Error("Sever made a channel nobody asked for")
	}
	if !isClosed(a.Severed()) || !isClosed(a.Drained()) {
		t.Error("Severed or Drained of a severed Active is not closed")
	}
}
