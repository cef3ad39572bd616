package drvhost_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
)

// wakeDeadline is how soon every consumer blocked in a host must return
// after the host is killed.
const wakeDeadline = 200 * time.Millisecond

// loadSlack is what a hang's detection may take beyond its health
// interval and deadline when the race detector and other test packages
// share two cores: the scheduler's delay, not the protocol's. A host that
// is never detected still fails the test, at its 10 s bound.
const loadSlack = 250 * time.Millisecond

// result is one blocked consumer's outcome.
type result struct {
	who  string
	err  error
	ev   sever.Events
	took time.Time
}

// blockConsumers starts one consumer of each kind blocked in the host:
// inside a call through a handle, reading a mirrored attribute, polling
// and reading the proxied char device. It returns once all are blocked.
func blockConsumers(t testing.TB, m *machine) (<-chan result, int, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan result, 8)
	h := m.open("blocked-caller")
	p, _ := m.sup.Provider("widget")
	f, err := chardev.RegistryOf(m.core).Open("widget0", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	af, err := m.core.Sysfs().Open("/devices/host-w/widget/slow", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := call(h, ctx, "block", nil)
		res <- result{who: "call through handle", err: err, took: time.Now()}
	}()
	go func() {
		_, err := af.ReadAtContext(ctx, make([]byte, 64), 0)
		res <- result{who: "attribute read", err: err, took: time.Now()}
	}()
	go func() {
		ev, err := f.Wait(ctx, sever.EventIn)
		res <- result{who: "char device poll", ev: ev, err: err, took: time.Now()}
	}()
	go func() {
		_, err := f.ReadContext(ctx, make([]byte, 8))
		res <- result{who: "char device read", err: err, took: time.Now()}
	}()
	// Blocked: the call and the attribute read are inside the provider's
	// and the node's active references; the poll and read wait on the file.
	deadline := time.Now().Add(5 * time.Second)
	for p.Inside() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond)
	return res, 4, func() {
		cancel()
		closeOK(t, "handle", h)
		closeOK(t, "char device", f)
		closeOK(t, "attribute", af)
	}
}

func TestKill9WakesEveryBlockedConsumerWithENODEV(t *testing.T) {
	m := newMachine(t, drvhost.Config{Policy: drvhost.RestartOnFailure, Backoff: time.Millisecond})
	fds := countFDs(t)
	old := m.sup.Device("widget")
	oldProv, _ := m.sup.Provider("widget")
	oldOwner := m.sup.Owner()
	oldCdev, _ := chardev.RegistryOf(m.core).Lookup("widget0")
	res, n, done := blockConsumers(t, m)
	oldHandle := m.open("idle")

	pid, err := m.sup.Kill()
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for range n {
		select {
		case r := <-res:
			if d := r.took.Sub(killed); d > wakeDeadline {
				t.Errorf("%s returned %v after kill -9 of pid %d, want within %v", r.who, d, pid, wakeDeadline)
			}
			if r.who == "char device poll" {
				if r.ev&(sever.EventErr|sever.EventHup) != sever.EventErr|sever.EventHup {
					t.Errorf("poller woke with %v, %v; want EventErr|EventHup", r.ev, r.err)
				}
				continue
			}
			if !errors.Is(r.err, syscall.ENODEV) {
				t.Errorf("%s returned %v, want ENODEV", r.who, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a blocked consumer never returned after kill -9: hang")
		}
	}
	// Removal was the one path: the old device is unregistered.
	select {
	case <-old.Removed():
	case <-time.After(5 * time.Second):
		t.Fatal("the dead host's device was never unregistered")
	}
	select {
	case <-oldOwner.Gone():
	case <-time.After(5 * time.Second):
		t.Errorf("the dead generation's owner %s is %v, want gone", oldOwner.Name(), oldOwner.State())
	}
	// Later calls through old handles are shells, and never reach the
	// next generation.
	gen, err := m.sup.WaitRunning(context.Background(), 1)
	if err != nil || gen != 2 {
		t.Fatalf("restart under on-failure: generation %d, %v; want 2", gen, err)
	}
	if _, err := call(oldHandle, context.Background(), "echo", []byte("x")); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("call through a generation-1 handle after restart = %v, want ENODEV", err)
	}
	if err := oldHandle.Close(); err != nil {
		t.Errorf("closing a shell: %v", err)
	}
	h2 := m.open("new")
	if out, err := call(h2, context.Background(), "echo", []byte("y")); err != nil || string(out) != "y" {
		t.Errorf("call into generation 2 = %q, %v", out, err)
	}
	closeOK(t, "handle", h2)
	if st := m.sup.Status(); st.Restarts != 1 || st.Pid == pid {
		t.Errorf("status after restart = %+v, want 1 restart and a new pid", st)
	}
	done()
	if n, o := oldProv.Handles(), oldCdev.Opens(); n != 0 || o != 0 {
		t.Errorf("after every consumer closed: %d generation-1 handles, %d opens left: shells leaked", n, o)
	}
	if got := countFDs(t); got > fds {
		t.Errorf("fds: %d before the kill, %d after the restart and close: leaked", fds, got)
	}
}

func TestHostDeathsArePolicedByRestartPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		policy  drvhost.Policy
		how     string // kill, panic, exit0, exit3
		restart bool
	}{
		{"never/kill", drvhost.RestartNever, "kill", false},
		{"on-failure/panic", drvhost.RestartOnFailure, "panic", true},
		{"on-failure/exit3", drvhost.RestartOnFailure, "exit3", true},
		{"on-failure/exit0", drvhost.RestartOnFailure, "exit0", false},
		{"always/exit0", drvhost.RestartAlways, "exit0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, drvhost.Config{Policy: tc.policy, Backoff: time.Millisecond, Output: discard{}})
			h := m.open("c")
			defer closeOK(t, "handle", h)
			ctx := context.Background()
			// Each way of dying ends the call that caused it, or not: its
			// result is not the point, the removal checked below is.
			switch tc.how {
			case "kill":
				if _, err := m.sup.Kill(); err != nil {
					t.Fatal(err)
				}
			case "panic":
				_, _ = call(h, ctx, "panic", nil)
			case "exit0":
				_, _ = call(h, ctx, "exit", []byte{0})
			case "exit3":
				_, _ = call(h, ctx, "exit", []byte{3})
			}
			if _, err := call(h, ctx, "echo", nil); !errors.Is(err, syscall.ENODEV) {
				// The call may have raced the removal; after it, ENODEV.
				waitRemoved(t, h)
			}
			if tc.restart {
				if _, err := m.sup.WaitRunning(timeout(t, 10*time.Second), 1); err != nil {
					t.Fatalf("host did not come back under %v after %s: %v", tc.policy, tc.how, err)
				}
				return
			}
			waitState(t, m.sup, drvhost.StateStopped)
			time.Sleep(50 * time.Millisecond)
			if st := m.sup.Status(); st.State != drvhost.StateStopped || st.Generation != 1 {
				t.Errorf("after %s under %v: %+v, want stopped at generation 1", tc.how, tc.policy, st)
			}
			if got, _ := m.read("/hosts/w/state"); got != "stopped\n" {
				t.Errorf("state file = %q, want stopped", got)
			}
			// A stopped host starts again when asked.
			if err := m.write("/hosts/w/restart", "1"); err != nil {
				t.Fatalf("restart of a stopped host: %v", err)
			}
			if got, _ := m.read("/hosts/w/state"); got != "running\n" {
				t.Errorf("state after restart = %q, want running", got)
			}
		})
	}
}

func TestHungHostIsRemovedWithinItsHealthDeadline(t *testing.T) {
	const interval, deadline = 50 * time.Millisecond, 200 * time.Millisecond
	m := newMachine(t, drvhost.Config{Policy: drvhost.RestartOnFailure, Backoff: time.Millisecond,
		HealthInterval: interval, HealthTimeout: deadline})
	res, n, done := blockConsumers(t, m)
	defer done()
	pid := m.sup.Status().Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil { // hung: alive, answering nothing
		t.Fatal(err)
	}
	hung := time.Now()
	for range n {
		select {
		case r := <-res:
			if d := r.took.Sub(hung); d > interval+deadline+wakeDeadline+loadSlack {
				t.Errorf("%s returned %v after the host hung, want within %v", r.who, d, interval+deadline+wakeDeadline+loadSlack)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a consumer blocked in a hung host never returned")
		}
	}
	if _, err := m.sup.WaitRunning(timeout(t, 10*time.Second), 1); err != nil {
		t.Fatalf("hung host not restarted: %v", err)
	}
}

func TestRestartFileStartsANewGeneration(t *testing.T) {
	m := newMachine(t, drvhost.Config{})
	h := m.open("old")
	defer closeOK(t, "handle", h)
	if err := m.write("/hosts/w/restart", "2"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("restart 2 = %v, want EINVAL", err)
	}
	if st := m.sup.Status(); st.Generation != 1 {
		t.Errorf("a refused restart changed the generation: %+v", st)
	}
	if err := m.write("/hosts/w/restart", "1"); err != nil {
		t.Fatalf("restart 1: %v", err)
	}
	if got, _ := m.read("/hosts/w/generation"); got != "2\n" {
		t.Errorf("generation after restart = %q, want 2", got)
	}
	if _, err := call(h, context.Background(), "echo", nil); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("old handle after restart = %v, want ENODEV", err)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitState(t *testing.T, s *drvhost.Supervisor, want drvhost.State) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if s.Status().State == want {
			return
		}
	}
	t.Fatalf("host never reached %v: %+v", want, s.Status())
}

func waitRemoved(t *testing.T, h *device.Handle[drvhost.Service]) {
	t.Helper()
	select {
	case <-h.Revoked():
	case <-time.After(10 * time.Second):
		t.Fatal("the host's provider was never revoked after its death")
	}
	if err := h.Err(); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("handle after the host's death: %v, want ENODEV", err)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd to count descriptors")
	}
	return len(ents)
}

// A driver deadlocked inside the host — the process still serves gRPC,
// but its Health does not answer — is a hung host too.
func TestWedgedDriverInALiveHostIsRemovedByHealth(t *testing.T) {
	const interval, deadline = 50 * time.Millisecond, 200 * time.Millisecond
	m := newMachine(t, drvhost.Config{Policy: drvhost.RestartOnFailure, Backoff: time.Millisecond,
		HealthInterval: interval, HealthTimeout: deadline})
	dev := m.sup.Device("widget")
	h := m.open("c")
	defer closeOK(t, "handle", h)
	if _, err := call(h, context.Background(), "wedge", nil); err != nil {
		t.Fatal(err)
	}
	wedged := time.Now()
	select {
	case <-dev.Removed():
		if d := time.Since(wedged); d > interval+deadline+wakeDeadline+loadSlack {
			t.Errorf("wedged host removed after %v, want within %v", d, interval+deadline+wakeDeadline+loadSlack)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a host whose driver is wedged was never removed")
	}
	if _, err := m.sup.WaitRunning(timeout(t, 10*time.Second), 1); err != nil {
		t.Fatalf("wedged host not restarted: %v", err)
	}
}
