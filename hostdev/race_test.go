package hostdev_test

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
)

// Readers, writers, pollers, deadline setters and two closers race a
// hang-up. Every call must end with data, ENODEV or EBADF — no hang, no
// other error, no panic — and the descriptors must all be closed, once.
func TestCallsRacingHangupAndCloseEndCleanly(t *testing.T) {
	before := fdCount(t)
	for round := range 50 {
		m, f := openSlave(t)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		ok := func(err error) bool {
			return err == nil || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EBADF)
		}
		for range 3 {
			wg.Add(4)
			go func() {
				defer wg.Done()
				for {
					_, err := f.Read(make([]byte, 8))
					if err != nil {
						if !ok(err) {
							errs <- err
						}
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for {
					if _, err := f.Write([]byte("x")); err != nil {
						if !ok(err) {
							errs <- err
						}
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for {
					ev, err := f.Poll(context.Background(), sever.EventIn)
					if err != nil || ev&(sever.EventErr|sever.EventHup) != 0 {
						if !ok(err) {
							errs <- err
						}
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for f.SetReadDeadline(time.Time{}) == nil {
				}
			}()
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		if round%2 == 0 {
			// Racing Closes: the loser gets ErrClosed by design; what this test
			// checks is that every path ends severed and closed once.
			_ = m.Close()
			go func() { _ = f.Close() }()
			_ = f.Close()
		} else {
			go func() { _ = m.Close() }()
			_ = f.Close()
			_ = m.Close()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: a call is still blocked 5 s after hang-up and Close", round)
		}
		close(errs)
		for err := range errs {
			t.Errorf("round %d: a call ended with %v, want data, ENODEV or EBADF", round, err)
		}
	}
	// The last round's "go f.Close()" may still be closing.
	deadline := time.Now().Add(2 * time.Second)
	for fdCount(t) != before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := fdCount(t); n != before {
		t.Fatalf("%d descriptors open after 50 rounds, %d before", n, before)
	}
}
