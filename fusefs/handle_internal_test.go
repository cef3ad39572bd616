package fusefs

import (
	"context"
	"testing"

	"github.com/sever-dev/sever"
)

// fakeStream is a stream whose wait queue is a bare sever.WaitQueue.
type fakeStream struct{ q *sever.WaitQueue }

func (f fakeStream) ReadAt(context.Context, []byte, int64, bool) (int, error)  { return 0, nil }
func (f fakeStream) WriteAt(context.Context, []byte, int64, bool) (int, error) { return 0, nil }
func (f fakeStream) Poll() (sever.Events, error)                               { return 0, nil }
func (f fakeStream) Wait(context.Context, sever.Events) (sever.Events, error)  { return 0, nil }
func (f fakeStream) OnChange(fn func()) func() bool                            { return f.q.OnChange(fn) }
func (f fakeStream) Close() error                                              { f.q.Sever(); return nil }
func (f fakeStream) mayBlock() bool                                            { return false }

// A poll that finds the file ready drops the wakeup it registered, unless
// another poll of the same file found it pending meanwhile: that poll may
// be asleep relying on it.
func TestReadyPollKeepsAWakeupAnotherPollShares(t *testing.T) {
	h := &handle{m: &Server{}, s: fakeStream{sever.NewWaitQueue("file")}}
	a := h.arm(1)
	if a == nil || h.m.nwatch.Load() != 1 {
		t.Fatalf("first arm registered %v (%d registered), want a wakeup", a, h.m.nwatch.Load())
	}
	if b := h.arm(1); b != nil {
		t.Fatal("a second arm registered another wakeup; one per handle")
	}
	h.disarm(a) // a's poll found the file ready; b's did not and sleeps
	if h.w != a || h.m.nwatch.Load() != 1 {
		t.Fatal("a ready poll dropped the wakeup another poll relies on")
	}
	h.release()
	if h.w != nil || h.m.nwatch.Load() != 0 {
		t.Fatal("release left the wakeup registered")
	}

	h = &handle{m: &Server{}, s: fakeStream{sever.NewWaitQueue("file")}}
	a = h.arm(1)
	h.disarm(a)
	if h.w != nil || h.m.nwatch.Load() != 0 {
		t.Fatal("a ready poll alone kept its wakeup")
	}
	if c := h.arm(1); c == nil {
		t.Fatal("arm after the disarm registered nothing")
	}
	h.release()
}
