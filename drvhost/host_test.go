package drvhost_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
)

// machine is a machine-side core with one supervised test host.
type machine struct {
	t    testing.TB
	log  *check.Log
	core *device.Core
	sup  *drvhost.Supervisor
}

func newMachine(t testing.TB, cfg drvhost.Config) *machine {
	t.Helper()
	log := new(check.Log)
	core := device.NewCore("pc", log)
	if cfg.Name == "" {
		cfg.Name = "w"
	}
	cfg.Command = []string{os.Args[0], "-test.run=^$"}
	cfg.Env = append(cfg.Env, testHostEnv+"=1")
	if cfg.Output == nil {
		cfg.Output = os.Stderr
	}
	sup, err := drvhost.New(core, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sup.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	m := &machine{t: t, log: log, core: core, sup: sup}
	t.Cleanup(m.close)
	return m
}

func (m *machine) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.sup.Stop(ctx); err != nil {
		m.t.Errorf("Stop: %v", err)
	}
	if err := m.core.Shutdown(ctx); err != nil {
		m.t.Errorf("Shutdown: %v", err)
	}
	if vs := m.log.Violations(); len(vs) > 0 {
		for _, v := range vs {
			m.t.Errorf("checker: %v", v)
		}
	}
}

// read reads a file of the machine's sysfs.
func (m *machine) read(path string) (string, error) {
	f, err := m.core.Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	return string(buf[:n]), errors.Join(err, f.Close())
}

func (m *machine) write(path, s string) error {
	f, err := m.core.Sysfs().Open(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(s))
	return errors.Join(err, f.Close())
}

func (m *machine) open(consumer string) *device.Handle[drvhost.Service] {
	m.t.Helper()
	p, err := m.sup.Provider("widget")
	if err != nil {
		m.t.Fatal(err)
	}
	h, err := p.Open(consumer)
	if err != nil {
		m.t.Fatal(err)
	}
	return h
}

func call(h *device.Handle[drvhost.Service], ctx context.Context, method string, arg []byte) (out []byte, err error) {
	err = h.Do(func(s drvhost.Service) error {
		out, err = s.Call(ctx, method, arg)
		return err
	})
	return out, err
}

func TestHostDevicesAppearLikeLocalOnes(t *testing.T) {
	m := newMachine(t, drvhost.Config{})
	ctx := context.Background()

	if got, err := m.read("/devices/host-w/widget/value"); err != nil || got != "0\n" {
		t.Errorf("read mirrored value = %q, %v; want \"0\\n\"", got, err)
	}
	if err := m.write("/devices/host-w/widget/value", "42"); err != nil {
		t.Fatalf("write mirrored value: %v", err)
	}
	if got, _ := m.read("/devices/host-w/widget/value"); got != "42\n" {
		t.Errorf("value after write = %q, want the host's \"42\\n\"", got)
	}
	if err := m.write("/devices/host-w/widget/value", "x"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("bad write = %v, want the host's EINVAL", err)
	}
	if got, err := m.read("/devices/host-w/widget/sub/hello"); got != "world\n" {
		t.Errorf("read nested mirrored attr = %q, %v", got, err)
	}

	h := m.open("test")
	defer closeOK(t, "handle", h)
	if out, err := call(h, ctx, "echo", []byte("ping")); err != nil || string(out) != "ping" {
		t.Errorf("echo through the handle = %q, %v", out, err)
	}
	if _, err := call(h, ctx, "fail", nil); !errors.Is(err, sever.ErrBusy) || !errors.Is(err, syscall.EBUSY) {
		t.Errorf("host error = %v, want EBUSY carried across", err)
	}
	if _, err := call(h, ctx, "nope", nil); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("unknown call = %v, want EOPNOTSUPP", err)
	}

	f, err := chardev.RegistryOf(m.core).Open("widget0", os.O_RDWR)
	if err != nil {
		t.Fatalf("open proxied char device: %v", err)
	}
	defer closeOK(t, "char device", f)
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := f.ReadContext(rctx, buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	time.Sleep(20 * time.Millisecond) // let the read block
	if _, err := f.Write([]byte("hi")); err != nil {
		t.Fatalf("write proxied char device: %v", err)
	}
	if s := <-got; s != "hi" {
		t.Errorf("blocked read woken by the host's data = %q, want \"hi\"", s)
	}

	st := m.sup.Status()
	for name, want := range map[string]string{
		"state": "running", "generation": "1", "restarts": "0", "pid": strconv.Itoa(st.Pid),
	} {
		if got, err := m.read("/hosts/w/" + name); err != nil || got != want+"\n" {
			t.Errorf("/hosts/w/%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if st.Pid == 0 || st.Pid == os.Getpid() {
		t.Errorf("pid = %d: want a child process", st.Pid)
	}
}

func TestBadConfigIsEINVALAndStartTwicePanics(t *testing.T) {
	core := device.NewCore("pc", new(check.Log))
	for _, cfg := range []drvhost.Config{
		{Name: "", Command: []string{"x"}},
		{Name: "a/b", Command: []string{"x"}},
		{Name: "w"},
		{Name: "w", Command: []string{"x"}, Dial: "127.0.0.1:1"},
	} {
		if _, err := drvhost.New(core, cfg); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("New(%+v) = %v, want EINVAL", cfg, err)
		}
	}
	if _, err := core.Sysfs().Lookup(drvhost.HostsDir); err == nil {
		t.Error("a refused New changed the tree")
	}
	m := newMachine(t, drvhost.Config{})
	defer func() {
		if recover() == nil {
			t.Error("a second Start did not panic")
		}
		if st := m.sup.Status(); st.State != drvhost.StateRunning || st.Generation != 1 {
			t.Errorf("the misused supervisor is %+v, want still running generation 1", st)
		}
	}()
	_ = m.sup.Start(context.Background()) // panics: its error is never returned
}
