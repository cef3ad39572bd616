package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestStressCommandRunsAndReplays(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"stress", "--seed", "2", "--ops", "3000", "--goroutines", "4", "--round-ops", "1500", "-q"}, &out, &errb); code != 0 {
		t.Fatalf("sever stress exit %d:\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"3000 operations", "ops/s", "PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"stress", "--seed", "2", "--goroutines", "4", "--round-ops", "1500", "--replay", "1", "--serial", "-q"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "1500 operations") {
		t.Fatalf("replay exit %d:\n%s", code, out.String())
	}
	if code := run([]string{"stress", "--goroutines", "0"}, &out, &errb); code != 2 {
		t.Errorf("bad flags: exit %d, want 2", code)
	}
	out.Reset()
	if code := run([]string{"stress", "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--replay") && !strings.Contains(out.String(), "-replay") {
		t.Errorf("--help: exit %d:\n%s", code, out.String())
	}
}
