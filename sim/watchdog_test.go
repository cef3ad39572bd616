package sim_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/sim"
)

// syncBuf is a writer the watchdog and the test share.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWatchdogReportsAStuckUnplugOnce: a removal that waits on a callback
// that does not return says so, once — in the trace and to the machine's
// writer — naming the object and how many calls are inside, and keeps
// waiting; when the callback returns the removal finishes.
func TestWatchdogReportsAStuckUnplugOnce(t *testing.T) {
	var out syncBuf
	m := sim.New("wd", sim.WithWatchdog(50*time.Millisecond, &out))
	ctx := context.Background()
	in, release := make(chan struct{}), make(chan struct{})
	dev, err := m.Core().Register(ctx, device.Config{Name: "stuck0", Bus: m.Platform(),
		Groups: []device.AttrGroup{{Attrs: []device.Attr{{Name: "slow",
			Store: func(c *kernfs.Call, d *device.Device, v any) error {
				close(in)
				<-release
				return nil
			}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		f, err := m.Sysfs().Open("/devices/stuck0/slow", os.O_WRONLY)
		if err != nil {
			t.Error(err)
			return
		}
		defer closeOK(t, f)
		_, _ = f.Write([]byte("1"))
	}()
	<-in
	unplugged := make(chan error, 1)
	go func() { unplugged <- dev.Unregister(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "/devices/stuck0/slow") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // room for a second report, which must not come
	close(release)
	if err := <-unplugged; err != nil {
		t.Errorf("Unregister after the callback returned: %v", err)
	}
	<-wrote
	line := out.String()
	if !strings.Contains(line, "/devices/stuck0/slow") || !strings.Contains(line, "1 accesses still inside") {
		t.Fatalf("the watchdog wrote %q; want a line naming /devices/stuck0/slow and 1 access inside", line)
	}
	if n := strings.Count(line, "\n"); n != 1 {
		t.Errorf("the watchdog wrote %d lines, want 1:\n%s", n, line)
	}
	var traced int
	for _, e := range m.Trace().Events() {
		if e.Kind == sim.KindWatchdog {
			traced++
		}
	}
	if traced != 1 {
		t.Errorf("%d watchdog events in the trace, want 1", traced)
	}
	if vs := quiesce(t, m); len(vs) != 0 {
		t.Errorf("violations: %v", vs)
	}
}
