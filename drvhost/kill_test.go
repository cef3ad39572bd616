package drvhost_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/drvhost"
)

// hostKills is how many kill -9s TestHostKillUnderLoad makes;
// SEVER_HOST_KILLS overrides it (CI runs 1000).
func hostKills(t *testing.T) int {
	if s := os.Getenv("SEVER_HOST_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("SEVER_HOST_KILLS=%q: %v", s, err)
		}
		return n
	}
	if testing.Short() {
		return 10
	}
	return 20
}

// TestHostKillUnderLoad kills the host again and again while consumers
// call into it: every call either succeeds or fails with ENODEV, never
// hangs, and the checker records nothing.
func TestHostKillUnderLoad(t *testing.T) {
	n := hostKills(t)
	m := newMachine(t, drvhost.Config{Policy: drvhost.RestartAlways, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Output: discard{}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []error
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				p, err := m.sup.Provider("widget")
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				h, err := p.Open("load")
				if err != nil {
					continue
				}
				for j := 0; j < 20 && ctx.Err() == nil; j++ {
					cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := call(h, cctx, "echo", []byte{byte(i)})
					timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
					ccancel()
					if timedOut || err != nil && !errors.Is(err, syscall.ENODEV) && ctx.Err() == nil {
						mu.Lock()
						bad = append(bad, err)
						mu.Unlock()
					}
				}
				closeOK(t, "handle", h)
			}
		}()
	}
	start := time.Now()
	for i := range n {
		gen, err := m.sup.WaitRunning(timeout(t, 30*time.Second), uint64(i))
		if err != nil {
			t.Fatalf("kill %d: host not back: %v (%+v)", i, err, m.sup.Status())
		}
		time.Sleep(time.Millisecond)
		if _, err := m.sup.Kill(); err != nil && !errors.Is(err, syscall.ENODEV) {
			t.Fatalf("kill %d (generation %d): %v", i, gen, err)
		}
	}
	cancel()
	wg.Wait()
	t.Logf("%d host kills in %v", n, time.Since(start))
	for _, err := range bad {
		t.Errorf("call under host kills: %v, want success or ENODEV", err)
	}
}
