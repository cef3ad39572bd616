package cp2112_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever"
)

// The text protocol: request a line for both edges, read event lines; get
// a line's level; after unplug, ENODEV.
func TestTextProtocolRequestsGetsAndReadsEvents(t *testing.T) {
	b := plug(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := b.m.Dev().Open(b.br.CdevName(), os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // after a Fatal; the Close at the end is checked
	if _, err := f.Write([]byte("request 3 both\n")); err != nil {
		t.Fatalf("request: %v", err)
	}
	if _, err := f.Write([]byte("request 4\n")); !errors.Is(err, sever.ErrBusy) {
		t.Errorf("second request: %v, want EBUSY", err)
	}
	for _, bad := range []string{"request 9", "request 1 sideways", "frob 1", "get", "get x"} {
		if _, err := f.Write([]byte(bad)); !errors.Is(err, sever.ErrInvalid) {
			t.Errorf("%q: %v, want EINVAL", bad, err)
		}
	}
	b.hw.SetInput(3, true)
	b.hw.SetInput(3, false)
	buf := make([]byte, 256)
	var got string
	for strings.Count(got, "\n") < 2 {
		n, err := f.ReadContext(ctx, buf)
		if err != nil {
			t.Fatalf("read events: %v (so far %q)", err, got)
		}
		got += string(buf[:n])
	}
	if got != "3 rising 1\n3 falling 2\n" {
		t.Errorf("events %q", got)
	}
	b.hw.SetInput(3, true)
	b.hw.SetInput(5, true)
	if _, err := f.Write([]byte("get 3\nget 5\n")); err != nil {
		t.Fatal(err)
	}
	n, err := f.ReadContext(ctx, buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "3 1\n5 1\n") {
		t.Errorf("get replies: %q, %v", buf[:n], err)
	}
	if err := b.port.Unplug(ctx); err != nil {
		t.Fatalf("unplug: %v", err)
	}
	if _, err := f.ReadContext(ctx, buf); !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("read after unplug: %v, want ENODEV", err)
	}
	if _, err := f.Write([]byte("get 3")); !errors.Is(err, sever.ErrNoDevice) {
		t.Errorf("write after unplug: %v, want ENODEV", err)
	}
	closeOK(t, f)
	for _, v := range b.quiesce(t) {
		t.Errorf("checker: %v", v)
	}
}
