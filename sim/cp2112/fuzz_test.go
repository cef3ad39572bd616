package cp2112_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/sim/cp2112"
	"github.com/sever-dev/sever/subsys/usb"
)

// replyLine is every line a text-mode read may return (see TextProtocol):
// a level reply "LINE 0|1" or an event "LINE rising|falling SEQ".
var replyLine = regexp.MustCompile(`^[0-7] ([01]|(rising|falling) [1-9][0-9]*)$`)

// FuzzGpiochipText writes arbitrary bytes to dev/gpiochipN's text protocol
// on one board, toggling a line between writes. A write succeeds or fails
// with EINVAL (malformed) or EBUSY (line taken) — never another error,
// never a driver fault; what a read then returns is well-formed lines; and
// close releases what the open requested.
func FuzzGpiochipText(f *testing.F) {
	for _, s := range []string{"request 3 both\n", "get 5\n", "request 1 rising\nget 1\n", "request 9", "frob 1", "get", "request 2 sideways", "\n\n", "request 0 none\nrequest 0\n", "get -1", "get 7 7 7", "request 07", "get +3", "\x00"} {
		f.Add([]byte(s), uint8(3))
	}
	b := boot(f)
	reg, name := b.m.Dev(), b.br.CdevName()
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if vs, err := b.m.Quiesce(ctx); err != nil || len(vs) > 0 {
			f.Errorf("quiesce: %v, %v", err, vs)
		}
	})
	f.Fuzz(func(t *testing.T, data []byte, toggle uint8) {
		file, err := reg.Open(name, os.O_RDWR|syscall.O_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := file.Write(data); err != nil && !errors.Is(err, sever.ErrInvalid) && !errors.Is(err, sever.ErrBusy) {
			t.Fatalf("write %q: %v; want nil, EINVAL or EBUSY", data, err)
		}
		line := int(toggle % 8)
		b.hw.SetInput(line, true)
		b.hw.SetInput(line, false)
		var out []byte
		buf := make([]byte, 64)
		for {
			n, err := file.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, sever.ErrInvalid) {
					t.Fatalf("read after %q: %v", data, err)
				}
				break
			}
		}
		if len(out) > 0 && !strings.HasSuffix(string(out), "\n") {
			t.Fatalf("after %q: read %q, not whole lines", data, out)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
			if l != "" && !replyLine.MatchString(l) {
				t.Fatalf("after %q: read line %q", data, l)
			}
		}
		if err := file.Close(); err != nil {
			t.Fatal(err)
		}
		if vs := b.m.Log().Violations(); len(vs) > 0 {
			t.Fatalf("after %q: %v", data, vs[0])
		}
		// Whatever the open requested is free again.
		for l := range 8 {
			if g, err := b.br.Chip().RequestLine(l, "fuzz"); err != nil {
				t.Fatalf("after %q and close: line %d: %v", data, l, err)
			} else {
				closeOK(t, g)
			}
		}
	})
}

// boot is plug for a fuzz target: one board on a fresh machine.
func boot(tb testing.TB) *board {
	ctx := context.Background()
	m := sim.New(tb.Name())
	cp, _ := m.Insmod("cp2112", nil)
	at24, _ := m.Insmod("at24", nil)
	lm75, _ := m.Insmod("lm75", nil)
	if _, err := cp2112.Register(ctx, m, cp, 0); err != nil {
		tb.Fatal(err)
	}
	if err := cp2112.RegisterClientDrivers(ctx, m, at24, lm75); err != nil {
		tb.Fatal(err)
	}
	host, err := usb.NewHost(ctx, m.Core(), "usb1", 1)
	if err != nil {
		tb.Fatal(err)
	}
	hw := cp2112.NewHardware("cp2112-0")
	if _, err := cp2112.Plug(ctx, m, host.Port(1), hw); err != nil {
		tb.Fatal(err)
	}
	br, err := cp2112.Lookup(m.Core(), "cp2112-0")
	if err != nil {
		tb.Fatal(err)
	}
	return &board{m: m, hw: hw, port: host.Port(1), br: br}
}
