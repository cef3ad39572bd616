package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemoPassesAndPrintsTableAndTimeline(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "--runs", "3"}, &out, &errb); code != 0 {
		t.Fatalf("sever demo exited %d:\n%s\n%s", code, out.String(), errb.String())
	}
	s := out.String()
	for _, want := range []string{"SCENARIO", "cp2112-unplug", "psi-rmdir", "scsi-delete-callback", "scsi-delete-held-open",
		"caught (", "clean", "timeline:", "severed", "drained", "ok: every correct variant clean"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
}

func TestDemoTraceWritesJSONLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.jsonl")
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "--scenario", "psi-rmdir", "--runs", "1", "--trace", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // only read
	kinds := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Kind, Object, Machine string
			T                     int64 `json:"t_ns"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds[e.Kind]++
	}
	for _, k := range []string{"severed", "released", "freed", "violation"} {
		if kinds[k] == 0 {
			t.Errorf("trace has no %q events: %v", k, kinds)
		}
	}
}

func TestDemoHelpExplainsEveryFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, flag := range []string{"-scenario", "-variant", "-runs", "-seed", "-trace", "-timeline", "-v", "-tracking", "-parallel"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("help does not explain %s:\n%s", flag, out.String())
		}
	}
}

func TestDemoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"demo", "--scenario", "nope"}, {"demo", "--variant", "x"}, {"demo", "--runs", "0"}, {"demo", "extra"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v exited %d, want 2", args, code)
		}
	}
}
