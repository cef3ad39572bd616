package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

// chromium finds a headless-capable Chromium, or skips the test saying what
// to install.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "chromium not found: install Debian's chromium (apt-get install chromium) to render the HTML timeline; .ci/run does"
	if os.Getenv("SEVER_REQUIRE_CHROMIUM") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// headless runs chromium on page with the flags a sandbox-less CI machine
// needs plus extra, and returns its stdout and stderr.
func headless(t *testing.T, bin, page string, extra ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0"}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, "file://"+page)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", extra, err, errb.String())
	}
	return out.String(), errb.String()
}

// sever demo --html renders in a real browser: the page loads with no
// script or console error, and shows both variants of every scenario, the
// object lanes, the removal moments and the naive runs' violations.
func TestDemoHTMLRendersInChromium(t *testing.T) {
	bin := chromium(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "demo.html")
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "--runs", "1", "--timeline", "none", "--html", page}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	dom, logs := headless(t, bin, page, "--dump-dom")
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "CONSOLE") || strings.Contains(line, "Uncaught") {
			t.Errorf("console: %s", line)
		}
	}
	if !strings.Contains(dom, `data-ready="1"`) {
		t.Fatalf("the page's closing script did not run; DOM starts:\n%.2000s", dom)
	}
	if !strings.Contains(dom, `data-errors="0"`) {
		t.Errorf("the page recorded script errors: %s", regexp.MustCompile(`data-errors="[^"]*"`).FindString(dom))
	}
	for what, want := range map[string]int{
		`class="run" data-variant="correct`: 7, `class="run" data-variant="naive`: 7,
		`class="moment removal"`: 14, `class="violation-text"`: 7,
	} {
		if n := strings.Count(dom, what); n < want {
			t.Errorf("the rendered page has %d of %s, want at least %d", n, what, want)
		}
	}
	if n := strings.Count(dom, `class="lane"`); n < 14*5 {
		t.Errorf("the rendered page has %d object lanes, want several per run", n)
	}
	if n := strings.Count(dom, `class="vmark"`); n < 7 {
		t.Errorf("the rendered page marks %d violations on lanes, want every naive run's", n)
	}
	shot := filepath.Join(dir, "demo.png")
	headless(t, bin, page, "--window-size=1500,1400", "--screenshot="+shot)
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("no screenshot of the page (%d bytes, %v)", len(png), err)
	}
	if dst := os.Getenv("SEVER_SCREENSHOT"); dst != "" { // to look at it: SEVER_SCREENSHOT=/tmp/x.png
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// sever stress --trace-json keeps only the newest --trace-events events and
// still writes a trace that loads back.
func TestStressTraceJSONIsBoundedAndLoadsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stress.json")
	var out, errb bytes.Buffer
	if code := run([]string{"stress", "-q", "--ops", "3000", "--round-ops", "1500", "--trace-json", path, "--trace-events", "500"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := lifetrace.Validate(data); err != nil {
		t.Fatalf("the stress trace does not load back: %v", err)
	}
	if !bytes.Contains(data, []byte("(last 500 events of ")) {
		t.Errorf("the trace does not say it kept the last 500 events")
	}
}
