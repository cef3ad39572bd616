package main

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"
)

// brokenPipe takes the first n bytes, then fails every write with EPIPE.
type brokenPipe struct {
	n   int
	got bytes.Buffer
}

func (b *brokenPipe) Write(p []byte) (int, error) {
	if b.got.Len()+len(p) > b.n {
		return 0, syscall.EPIPE
	}
	return b.got.Write(p)
}

func TestDemoFailsWhenItsReportCannotBeWritten(t *testing.T) {
	for _, n := range []int{0, 200} { // the first line fails; a later one does
		out := &brokenPipe{n: n}
		var errb bytes.Buffer
		code := run([]string{"demo", "--scenario", "psi-rmdir", "--runs", "1"}, out, &errb)
		if code != 1 {
			t.Errorf("stdout failing after %d bytes: exit %d, want 1; stderr:\n%s", n, code, errb.String())
		}
		if !strings.Contains(errb.String(), "writing the report") || !strings.Contains(errb.String(), syscall.EPIPE.Error()) {
			t.Errorf("stdout failing after %d bytes: stderr does not say the report failed:\n%s", n, errb.String())
		}
	}
}

func TestReportKeepsTheFirstErrorAndWritesNothingAfter(t *testing.T) {
	w := &brokenPipe{n: 6}
	r := &report{w: w}
	r.printf("%s\n", "first")
	r.println("second, too long")
	r.keep(errors.New("later"))
	r.println("x")
	if !errors.Is(r.err, syscall.EPIPE) {
		t.Errorf("err = %v, want the first one, EPIPE", r.err)
	}
	if got := w.got.String(); got != "first\n" {
		t.Errorf("written %q, want only %q", got, "first\n")
	}
}
