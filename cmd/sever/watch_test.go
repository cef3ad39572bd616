package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchLines runs watch with args until the test ends and returns its
// output, one decoded line at a time.
func watchLines(t *testing.T, args ...string) <-chan map[string]any {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		code <- watch(ctx, args, pw, &stderr)
		_ = pw.Close() // an io.PipeWriter's Close always returns nil
	}()
	lines := make(chan map[string]any)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		defer close(lines)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("sever watch printed a line that is not JSON: %q", sc.Text())
				continue
			}
			select {
			case lines <- m:
			case <-ctx.Done():
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("sever watch exited %d when its context ended, want 0; stderr: %s", c, stderr.String())
		}
		<-scanDone
	})
	return lines
}

func nextLine(t *testing.T, lines <-chan map[string]any, keep func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("sever watch stopped printing")
			}
			if keep(m) {
				return m
			}
		case <-timeout:
			t.Fatal("no matching line from sever watch within 5 s")
		}
	}
}

func TestWatchColdplugPrintsDevicesPresent(t *testing.T) {
	lines := watchLines(t, "--coldplug", "--subsystem", "net")
	m := nextLine(t, lines, func(m map[string]any) bool { return m["devpath"] == "/devices/virtual/net/lo" })
	if m["action"] != "add" || m["subsystem"] != "net" || m["coldplug"] != true {
		t.Fatalf("lo printed as %v", m)
	}
	if _, ok := m["seqnum"]; !ok {
		t.Fatalf("line without seqnum: %v", m)
	}
}

func TestWatchPrintsLoopDeviceAddAndRemove(t *testing.T) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("cannot make loop devices (needs root and the loop module): %v", err)
	}
	defer func() { _ = ctl.Close() }() // only ioctls went through it: nothing to lose
	// --coldplug: its first line says the socket is listening.
	lines := watchLines(t, "--coldplug", "--subsystem", "block")
	nextLine(t, lines, func(map[string]any) bool { return true })
	var idx int
	for {
		n := 1000 + rand.IntN(100000)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(n))
		if errno == unix.EEXIST {
			continue
		}
		if errno != 0 {
			t.Skipf("LOOP_CTL_ADD refused: %v", errno)
		}
		idx = n
		break
	}
	devpath := fmt.Sprintf("/devices/virtual/block/loop%d", idx)
	add := nextLine(t, lines, func(m map[string]any) bool { return m["devpath"] == devpath })
	if add["action"] != "add" || add["devname"] != fmt.Sprintf("loop%d", idx) || add["subsystem"] != "block" || add["seqnum"].(float64) == 0 {
		t.Fatalf("add of loop%d printed as %v", idx, add)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx)); errno != 0 {
		t.Fatalf("LOOP_CTL_REMOVE: %v", errno)
	}
	rm := nextLine(t, lines, func(m map[string]any) bool { return m["devpath"] == devpath })
	if rm["action"] != "remove" {
		t.Fatalf("after the add came %v, want the remove", rm)
	}
}

func TestWatchFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := watch(context.Background(), []string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--subsystem") && !strings.Contains(out.String(), "-subsystem") {
		t.Fatalf("watch --help = %d, %q", code, out.String())
	}
	if code := watch(context.Background(), []string{"extra"}, &out, &errb); code != 2 {
		t.Fatalf("watch with an argument exited %d, want 2", code)
	}
	if code := watch(context.Background(), []string{"--nonsense"}, &out, &errb); code != 2 {
		t.Fatalf("watch --nonsense exited %d, want 2", code)
	}
}

// TestWatchHelperProcess is not a test: TestWatchExitsCleanlyOnSIGINT runs
// the test binary as 'sever watch' through it.
func TestWatchHelperProcess(t *testing.T) {
	if os.Getenv("SEVER_WATCH_HELPER") != "1" {
		return
	}
	os.Exit(run([]string{"watch", "--coldplug", "--subsystem", "net"}, os.Stdout, os.Stderr))
}

func TestWatchExitsCleanlyOnSIGINT(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchHelperProcess$")
	cmd.Env = append(os.Environ(), "SEVER_WATCH_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first line means the signal handler is installed and the socket open.
	first := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		first <- sc.Scan()
		_, _ = io.Copy(io.Discard, out) // drains the rest; ends with the process
	}()
	select {
	case ok := <-first:
		if !ok {
			// It failed already (the Fatal below): only reaped here.
			_ = cmd.Process.Kill()
			_ = cmd.Wait() // "signal: killed", expected
			t.Fatalf("sever watch printed nothing; stderr: %s", stderr.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill() // as above
		_ = cmd.Wait()
		t.Fatal("sever watch printed nothing in 10 s")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sever watch on SIGINT: %v (want exit 0); stderr: %s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill() // a hung process: the Fatal below says so
		err := <-done
		t.Fatalf("sever watch still running 5 s after SIGINT (then killed: %v)", err)
	}
}
