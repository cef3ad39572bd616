package hostdev_test

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/hostdev"
)

func openSlave(t *testing.T) (*os.File, *hostdev.File) {
	t.Helper()
	m, slave := newPty(t)
	f, err := hostdev.Open(slave, os.O_RDWR|syscall.O_NOCTTY)
	if err != nil {
		_ = m.Close() // the test stops here: the open error is the news
		t.Fatalf("open %s: %v", slave, err)
	}
	return m, f
}

func TestReadReturnsWhatTheDeviceSends(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, m)
	defer closeOrFail(t, f)
	if _, err := m.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := f.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v; want the bytes the master wrote", buf[:n], err)
	}
	if _, err := f.Write([]byte("back")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	n, _ = m.Read(buf)
	if string(buf[:n]) != "back" {
		t.Fatalf("the master read %q, want what the handle wrote", buf[:n])
	}
}

func TestReadBlockedAtHangupReturnsENODEVWithin100ms(t *testing.T) {
	// A wake-up that waits for a timer or a poll interval misses 100 ms
	// every time; a loaded machine may miss it once. Three tries.
	var took []time.Duration
	for range 3 {
		d := hangupWhileReading(t)
		if d <= 100*time.Millisecond {
			return
		}
		took = append(took, d)
	}
	t.Fatalf("the blocked Read woke %v after the hang-up in three tries, want within 100 ms", took)
}

// hangupWhileReading blocks a Read on a pty's slave, hangs the pty up by
// closing its master, checks that the Read returns ENODEV and the handle is
// severed, and returns how long after the hang-up the Read returned.
func hangupWhileReading(t *testing.T) time.Duration {
	m, f := openSlave(t)
	defer closeOrFail(t, f)
	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		_, err := f.Read(make([]byte, 16))
		done <- result{err, time.Now()}
	}()
	time.Sleep(20 * time.Millisecond) // let it block
	hungUp := time.Now()
	// the adapter is pulled
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	select {
	case r := <-done:
		if !errors.Is(r.err, syscall.ENODEV) {
			t.Fatalf("a Read blocked when the device went returned %v, want ENODEV", r.err)
		}
		took = r.at.Sub(hungUp)
	case <-time.After(time.Second):
		t.Fatal("a Read blocked when the device went is still blocked after 1 s")
	}
	select {
	case <-f.Gone():
	default:
		t.Fatal("the kernel's EIO did not sever the handle")
	}
	return took
}

func TestEveryCallAfterTheDeviceWentReturnsENODEVAtOnce(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, f)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("first Read after hang-up: %v, want ENODEV", err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Read: %v, want ENODEV", err)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Write: %v, want ENODEV", err)
	}
	if err := f.Control(func(uintptr) error { t.Error("Control ran fn on a severed handle"); return nil }); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Control: %v, want ENODEV", err)
	}
	if ev, err := f.Poll(context.Background(), sever.EventIn); ev != sever.EventErr|sever.EventHup || !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Poll: %v, %v; want ERR|HUP and ENODEV", ev, err)
	}
	if err := f.SetReadDeadline(time.Now().Add(time.Hour)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("SetReadDeadline: %v, want ENODEV (the sever's wake-up cannot be lifted)", err)
	}
	if err := f.Err(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("Err: %v, want ENODEV", err)
	}
}

func TestPollBlockedAtHangupWakesWithErrHup(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, f)
	type result struct {
		ev  sever.Events
		err error
	}
	done := make(chan result, 1)
	go func() {
		ev, err := f.Poll(context.Background(), sever.EventIn)
		done <- result{ev, err}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.ev != sever.EventErr|sever.EventHup || !errors.Is(r.err, syscall.ENODEV) {
			t.Fatalf("a Poll blocked at hang-up returned %v, %v; want ERR|HUP and ENODEV", r.ev, r.err)
		}
	case <-time.After(time.Second):
		t.Fatal("a Poll blocked when the device went is still blocked after 1 s")
	}
}

func TestPollReportsReadiness(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, m)
	defer closeOrFail(t, f)
	if ev, err := f.Poll(context.Background(), sever.EventOut); ev != sever.EventOut || err != nil {
		t.Fatalf("Poll(OUT) on an idle tty = %v, %v; want OUT", ev, err)
	}
	if _, err := m.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if ev, err := f.Poll(context.Background(), sever.EventIn); ev != sever.EventIn || err != nil {
		t.Fatalf("Poll(IN) with a byte waiting = %v, %v; want IN", ev, err)
	}
}

func TestPollHonorsContext(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, m)
	defer closeOrFail(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ev, err := f.Poll(ctx, sever.EventIn)
	if ev != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Poll with nothing to read and a 20 ms context = %v, %v; want 0, deadline exceeded", ev, err)
	}
	if f.Err() != nil {
		t.Fatalf("a cancelled Poll severed the handle: %v", f.Err())
	}
}

func TestPollRefusesBadMask(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, m)
	defer closeOrFail(t, f)
	for _, want := range []sever.Events{0, sever.EventErr, sever.EventIn | 0x100} {
		if _, err := f.Poll(context.Background(), want); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Poll(%v) = %v, want EINVAL", want, err)
		}
	}
	if f.Err() != nil {
		t.Fatalf("a refused Poll changed the handle: %v", f.Err())
	}
}

func TestCloseWakesBlockedCallsFromAnotherGoroutine(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, m)
	readErr := make(chan error, 1)
	pollErr := make(chan error, 1)
	go func() { _, err := f.Read(make([]byte, 1)); readErr <- err }()
	go func() { _, err := f.Poll(context.Background(), sever.EventIn); pollErr <- err }()
	time.Sleep(20 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	for name, c := range map[string]chan error{"Close": closed, "Read": readErr, "Poll": pollErr} {
		select {
		case err := <-c:
			if name == "Close" && err != nil {
				t.Errorf("Close: %v", err)
			}
			if name != "Close" && !errors.Is(err, syscall.EBADF) {
				t.Errorf("%s woken by Close returned %v, want EBADF", name, err)
			}
		case <-time.After(time.Second):
			t.Fatalf("%s still blocked 1 s after Close", name)
		}
	}
	if err := f.Close(); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("second Close = %v, want EBADF", err)
	}
}

func TestCloseFromOnGoneReturns(t *testing.T) {
	m, f := openSlave(t)
	closed := make(chan error, 1)
	f.OnGone(func() { closed <- f.Close() })
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, syscall.EBADF) && !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("Read at hang-up: %v", err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close from the handle's own OnGone callback: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close called from the handle's own OnGone callback did not return")
	}
}

func TestOnGoneDoesNotRunForClose(t *testing.T) {
	m, f := openSlave(t)
	defer closeOrFail(t, m)
	ran := false
	f.OnGone(func() { ran = true })
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Fatal("OnGone ran for a Close, not for the device's going")
	}
}

func TestDescriptorClosedExactlyOnce(t *testing.T) {
	before := fdCount(t)
	m, f := openSlave(t)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	_, _ = f.Read(make([]byte, 1)) // ENODEV; it severs, closes the slave's descriptor and the eventfd
	if n := fdCount(t); n != before {
		t.Fatalf("%d descriptors open after the sever, %d before the pty: the sever did not close what the handle held", n, before)
	}
	// A descriptor opened now may get the number the handle had; a second
	// close by the handle would close it.
	other, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }() // /dev/null, only stat-ed
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Stat(); err != nil {
		t.Fatalf("Close of the severed handle closed a descriptor it no longer owned: %v", err)
	}
	if n := fdCount(t); n != before+1 {
		t.Fatalf("%d descriptors open, want %d", n, before+1)
	}
}

func TestNewFileRefusesRegularFile(t *testing.T) {
	p := t.TempDir() + "/plain"
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := hostdev.Open(p, os.O_RDONLY); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Open of a regular file = %v, want EINVAL", err)
	}
	if _, err := hostdev.NewFile(-1, "bad"); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("NewFile(-1) = %v, want EINVAL", err)
	}
}

// closeOrFail closes c, failing the test if Close errs: for deferred
// closes of handles and pty masters that nothing else closed.
func closeOrFail(t testing.TB, c io.Closer) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
