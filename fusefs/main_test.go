package fusefs_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/fuse"
	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/kernfs"
)

// helperEnv, set in a re-executed test binary, makes it mount a tree on the
// directory it names and sleep until killed: the "earlier run" that leaves
// a stale mount behind.
const helperEnv = "FUSEFS_TEST_STALE_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		staleHelper(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

func staleHelper(dir string) {
	tr := kernfs.New()
	if _, err := tr.AddAttr(tr.Root(), kernfs.Attr{Name: "x", Show: func(_ *kernfs.Call, b []byte) ([]byte, error) { return append(b, "x\n"...), nil }}); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if _, err := fusefs.Mount(dir, fusefs.Sources{Sys: tr}); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("mounted")
	time.Sleep(time.Hour)
}

// provider is the test's driver: /devices/dev0 with attributes of every
// kind and mode, and /class/dev0 linking to it. Every Open and Release is
// counted, and Show/Store calls after the device was removed are counted
// as late.
type provider struct {
	tr  *kernfs.Tree
	log *check.Log

	dev, value, secret, ro, blob, link *kernfs.Node

	mu       sync.Mutex
	v        int64
	opens    atomic.Int64
	releases atomic.Int64
	removed  atomic.Bool
	late     atomic.Int64
}

func newProvider(t testing.TB) *provider {
	t.Helper()
	p := &provider{v: 1, log: &check.Log{}}
	p.tr = kernfs.New(sever.WithLog(p.log))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, v := range p.log.Quiesce(ctx) {
			t.Errorf("checker: %v\n%s", v, v.Stack)
		}
		if n := p.late.Load(); n != 0 {
			t.Errorf("%d provider callbacks ran after the device was removed", n)
		}
	})
	must := func(n *kernfs.Node, err error) *kernfs.Node {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	devs := must(p.tr.AddDir(p.tr.Root(), kernfs.Dir{Name: "devices"}))
	p.dev = must(p.tr.AddDir(devs, kernfs.Dir{Name: "dev0", Hidden: true}))
	open := func(*kernfs.Call) (any, error) { p.note(); p.opens.Add(1); return nil, nil }
	release := func(*kernfs.Node, any) { p.releases.Add(1) }
	show := func(_ *kernfs.Call, b []byte) ([]byte, error) {
		p.note()
		p.mu.Lock()
		defer p.mu.Unlock()
		return append(strconv.AppendInt(b, p.v, 10), '\n'), nil
	}
	store := func(_ *kernfs.Call, v any) error {
		p.note()
		p.mu.Lock()
		p.v = v.(int64)
		p.mu.Unlock()
		return nil
	}
	p.value = must(p.tr.AddAttr(p.dev, kernfs.Attr{Name: "value", Show: show, Store: store, Parse: kernfs.Int(0, 1000), Open: open, Release: release}))
	p.secret = must(p.tr.AddAttr(p.dev, kernfs.Attr{Name: "secret", Mode: 0o600, Show: show, Store: store, Parse: kernfs.Int(0, 1000), Open: open, Release: release}))
	p.ro = must(p.tr.AddAttr(p.dev, kernfs.Attr{Name: "ro", Show: show, Open: open, Release: release}))
	p.blob = must(p.tr.AddBin(p.dev, kernfs.BinAttr{Name: "blob", Mode: 0o400, Size: 8, Open: open, Release: release,
		Read: func(_ *kernfs.Call, off int64, b []byte) (int, error) {
			p.note()
			return copy(b, "abcdefgh"[off:]), nil
		}}))
	class := must(p.tr.AddDir(p.tr.Root(), kernfs.Dir{Name: "class"}))
	p.link = must(p.tr.AddSymlink(class, "dev0", p.dev, nil))
	if err := p.tr.Activate(p.dev); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *provider) note() {
	if p.removed.Load() {
		p.late.Add(1)
	}
}

// unplug removes the device, as a hot-unplug does.
func (p *provider) unplug(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.tr.Remove(ctx, p.dev); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	p.removed.Store(true)
}

// mount serves src on a fresh directory and unmounts it at the end of the
// test. It skips the test if this machine cannot mount FUSE.
func mount(t testing.TB, src fusefs.Sources, opts ...fusefs.Option) *fusefs.Server {
	t.Helper()
	skipWithoutFUSE(t)
	dir := t.TempDir()
	s, err := fusefs.Mount(dir, src, append([]fusefs.Option{fusefs.Logf(t.Logf)}, opts...)...)
	if err != nil {
		msg := strings.ToLower(err.Error())
		if errors.Is(err, os.ErrPermission) || strings.Contains(msg, "permission denied") || strings.Contains(msg, "not permitted") {
			t.Skipf("mounting FUSE is not permitted here: %v", err)
		}
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// skipWithoutFUSE skips a test that needs to mount where nothing can: no
// /dev/fuse, or neither root (which mounts directly) nor fusermount3.
func skipWithoutFUSE(t testing.TB) {
	t.Helper()
	if err := fuse.Available(); err != nil {
		t.Skip(err)
	}
}

// run execs a command and returns its stdout, stderr and error.
func run(t testing.TB, name string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// pyScript is a user process driven line by line: it holds named file
// descriptors across commands, so the test can remove a node between a
// process's open and its read. Each command prints one JSON string: "ok",
// "ok:<data>", an errno name, or poll's revents as a number. read is
// pread at 0 (an attribute's fresh content), rd a plain read (a char
// device's next bytes). SIGUSR1 makes a system call it is blocked in fail
// with EINTR, and the process goes on.
const pyScript = `
import errno, json, os, select, signal, sys
fds = {}
def say(x): print(json.dumps(x), flush=True)
def interrupted(*_): raise InterruptedError(errno.EINTR, "interrupted by SIGUSR1")
signal.signal(signal.SIGUSR1, interrupted)
for line in sys.stdin:
    line = line.rstrip("\n")
    cmd = line.split(" ", 3)
    try:
        if cmd[0] == "open":
            fl = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR,
                  "rn": os.O_RDONLY | os.O_NONBLOCK}[cmd[3]]
            fds[cmd[1]] = os.open(cmd[2], fl); say("ok")
        elif cmd[0] == "read":
            say("ok:" + os.pread(fds[cmd[1]], 4096, 0).decode())
        elif cmd[0] == "rd":
            say("ok:" + os.read(fds[cmd[1]], 4096).decode())
        elif cmd[0] == "write":
            os.write(fds[cmd[1]], line.split(" ", 2)[2].encode()); say("ok")
        elif cmd[0] == "nonblock":
            os.set_blocking(fds[cmd[1]], False); say("ok")
        elif cmd[0] == "stat":
            say("ok:%o" % os.stat(cmd[1]).st_mode)
        elif cmd[0] == "poll":
            p = select.poll(); p.register(fds[cmd[1]], int(cmd[2], 0))
            r = p.poll(int(cmd[3]))
            say(str(r[0][1] if r else 0))
        elif cmd[0] == "close":
            os.close(fds.pop(cmd[1])); say("ok")
        else:
            say("bad command")
    except OSError as e:
        say(errno.errorcode.get(e.errno, str(e.errno)))
`

type pyproc struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startPy(t testing.TB) *pyproc {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("no python3: %v", err)
	}
	cmd := exec.Command(py, "-c", pyScript)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &pyproc{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(p.kill)
	return p
}

// kill ends the process (its descriptors close with it) and reaps it.
func (p *pyproc) kill() {
	// Ending it either way: one that is gone already is as good.
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait() // "signal: killed", expected
	for range p.lines {
	}
}

func (p *pyproc) send(cmd string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		p.t.Fatalf("python: send %q: %v", cmd, err)
	}
}

// reply waits for the answer to the last command sent.
func (p *pyproc) reply(within time.Duration) string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatal("python exited")
		}
		var s string
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			p.t.Fatalf("python said %q: %v", l, err)
		}
		return s
	case <-time.After(within):
		p.t.Fatalf("python did not answer within %v", within)
	}
	return ""
}

// signal sends the process sig.
func (p *pyproc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("python: signal %v: %v", sig, err)
	}
}

// quiet asserts the process says nothing for d: the command it was sent
// is still blocked.
func (p *pyproc) quiet(what string, d time.Duration) {
	p.t.Helper()
	select {
	case l := <-p.lines:
		p.t.Fatalf("%s returned %s; want it blocked", what, l)
	case <-time.After(d):
	}
}

// do sends a command and returns its answer.
func (p *pyproc) do(cmd string) string {
	p.t.Helper()
	p.send(cmd)
	return p.reply(10 * time.Second)
}

// eventually polls cond until it holds or 10s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func path(s *fusefs.Server, rel string) string { return filepath.Join(s.Dir(), rel) }
