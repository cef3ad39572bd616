package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sever-dev/sever/lifetrace"
)

// sever demo --trace-json writes a trace Perfetto loads: every async begin
// ended, ids unique per object, flows bound at both ends; with one process
// per scenario run, and the naive runs' violations on it.
func TestDemoTraceJSONLoadsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.json")
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "--runs", "1", "--timeline", "none", "--trace-json", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := lifetrace.Validate(data); err != nil {
		t.Fatalf("the demo's trace does not load back: %v", err)
	}
	var ct lifetrace.ChromeTrace
	if err := json.Unmarshal(data, &ct); err != nil {
		t.Fatal(err)
	}
	procs := map[string]bool{}
	var violations, flows, owners int
	for _, e := range ct.TraceEvents {
		switch {
		case e.Ph == "M" && e.Name == "process_name":
			procs[e.Args["name"].(string)] = true
		case e.Ph == "M" && e.Name == "thread_name" && strings.HasPrefix(e.Args["name"].(string), "owner "):
			owners++
		case e.Ph == "i" && e.Name == "violation":
			violations++
		case e.Ph == "f":
			flows++
		}
	}
	if !procs["cp2112-unplug correct, seed 1"] || !procs["scsi-delete-held-open naive, seed 1"] || len(procs) != 14 {
		t.Errorf("processes %v, want one per scenario and variant", procs)
	}
	if violations == 0 || flows == 0 || owners == 0 {
		t.Errorf("%d violations, %d flows, %d owner tracks: want some of each", violations, flows, owners)
	}
}
