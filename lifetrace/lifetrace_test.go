package lifetrace_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/lifetrace"
)

func show(_ *kernfs.Call, buf []byte) ([]byte, error) { return append(buf, "1\n"...), nil }

// removal records a directory with an attribute and two open files being
// removed, and a violation about the attribute.
func removal(t *testing.T, rec *lifetrace.Recorder) {
	t.Helper()
	var log check.Log
	sever.ObserveLog(&log, rec)
	tr := kernfs.New(sever.WithObserver(rec), sever.WithLog(&log))
	dir, err := tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev0"})
	if err != nil {
		t.Fatal(err)
	}
	attr, err := tr.AddAttr(dir, kernfs.Attr{Name: "value", Show: show})
	if err != nil {
		t.Fatal(err)
	}
	var files []*kernfs.File
	for range 2 {
		f, err := tr.OpenNode(attr, os.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	rec.Note("scenario", "unplug dev0")
	if err := tr.Remove(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if _, err := files[0].ReadAt(make([]byte, 8), 0); err == nil {
		t.Fatal("read of a removed attribute succeeded")
	}
	log.Record(check.Violation{Class: check.CallbackAfterSever, Object: "kernfs: /dev0/value", Detail: "show ran after sever"})
	for _, f := range files {
		if err := f.Close(); err != nil {
			t.Errorf("close of a removed attribute's file: %v; want nil (a first Close succeeds)", err)
		}
	}
}

func chrome(t *testing.T, runs ...lifetrace.Run) (lifetrace.ChromeTrace, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := lifetrace.WriteChrome(&buf, runs...); err != nil {
		t.Fatal(err)
	}
	var ct lifetrace.ChromeTrace
	if err := json.Unmarshal(buf.Bytes(), &ct); err != nil {
		t.Fatal(err)
	}
	return ct, buf.Bytes()
}

func TestChromeTraceOfARemovalLoadsBackWhole(t *testing.T) {
	rec := lifetrace.NewRecorder(0)
	removal(t, rec)
	ct, data := chrome(t, lifetrace.Run{Name: "removal", Records: rec.Records()}, lifetrace.Run{Name: "again", Records: rec.Records()})
	if err := lifetrace.Validate(data); err != nil {
		t.Fatalf("the trace does not load back: %v\n%s", err, data)
	}
	var begins, ends, violations, severs int
	caused := map[string]bool{}
	threads := map[[2]int]string{}
	for _, e := range ct.TraceEvents {
		if e.Ph == "M" && e.Name == "thread_name" {
			threads[[2]int{e.Pid, e.Tid}] = e.Args["name"].(string)
		}
	}
	for _, e := range ct.TraceEvents {
		switch {
		case e.Ph == "b":
			begins++
		case e.Ph == "e":
			ends++
		case e.Ph == "i" && e.Name == "violation":
			violations++
			if !strings.Contains(e.Args["detail"].(string), "show ran after sever") || e.Args["object"] != "kernfs: /dev0/value" {
				t.Errorf("the violation is not on the attribute's track with its text: %+v", e)
			}
			if th := threads[[2]int{e.Pid, e.Tid}]; th != "active kernfs: /dev0/value" {
				t.Errorf("the violation is on track %q, want the attribute node's", th)
			}
		case e.Ph == "X" && e.Name == "sever":
			severs++
		case e.Ph == "f" && e.Pid == 1:
			caused[e.Args["caused"].(string)] = true
		}
	}
	if begins == 0 || begins != ends {
		t.Errorf("%d async begins and %d ends", begins, ends)
	}
	if violations != 2 {
		t.Errorf("%d violation instants, want one per run", violations)
	}
	if severs == 0 {
		t.Error("no sever slices")
	}
	// The attribute's removal severed both open files: an arrow to each
	// file's shell (the open's release and its wait queue's hang-up are
	// the sever's doing; the free at the last close is not).
	for _, f := range []string{"kernfs: /dev0/value: open 1", "kernfs: /dev0/value: open 2"} {
		if !caused[f] {
			t.Errorf("no flow from the attribute's sever to %s; flows to %v", f, caused)
		}
	}
}

func TestBoundedRecorderKeepsTheNewestAndStillLoads(t *testing.T) {
	rec := lifetrace.NewRecorder(7)
	removal(t, rec)
	rs := rec.Records()
	if len(rs) != 7 || rec.Dropped() == 0 {
		t.Fatalf("kept %d records and dropped %d, want 7 kept and some dropped", len(rs), rec.Dropped())
	}
	for i := 1; i < len(rs); i++ {
		if rs[i].T < rs[i-1].T {
			t.Fatalf("records out of order at %d", i)
		}
	}
	_, data := chrome(t, lifetrace.Run{Name: "tail", Records: rs})
	if err := lifetrace.Validate(data); err != nil {
		t.Fatalf("a truncated trace does not load back: %v\n%s", err, data)
	}
}

func TestConcurrentLifetimesNeverOverlapOnATrack(t *testing.T) {
	rec := lifetrace.NewRecorder(0)
	opt := sever.WithObserver(rec)
	var wg sync.WaitGroup
	for range 40 {
		a := sever.NewActive("a", opt)
		q := sever.NewWaitQueue("a: q", opt)
		tok, _ := a.Enter()
		wg.Go(func() { a.Exit(&tok) })
		wg.Go(func() { _ = a.Sever(context.Background()); q.Sever(); q.Free() })
		wg.Go(func() { _ = a.Sever(context.Background()); _ = a.Do(func() error { return nil }) })
	}
	wg.Wait()
	_, data := chrome(t, lifetrace.Run{Name: "race", Records: rec.Records()})
	if err := lifetrace.Validate(data); err != nil {
		t.Fatal(err)
	}
}

// Validate must reject what the format's consumers reject, or the tests
// above prove nothing.
func TestValidateRejectsBrokenTraces(t *testing.T) {
	obj := `"args":{"object":"o"}`
	cases := map[string]string{
		"duration pair":     `{"ph":"B","ts":1,"pid":1,"tid":1,` + obj + `},{"ph":"E","ts":2,"pid":1,"tid":1,` + obj + `}`,
		"begin never ends":  `{"ph":"b","name":"live","cat":"lifetime","id":"0x1","ts":1,"pid":1,"tid":1,` + obj + `}`,
		"end without begin": `{"ph":"e","name":"live","cat":"lifetime","id":"0x1","ts":1,"pid":1,"tid":1,` + obj + `}`,
		"nested on one id": `{"ph":"b","name":"live","cat":"lifetime","id":"0x1","ts":1,"pid":1,"tid":1,` + obj + `},` +
			`{"ph":"b","name":"severing","cat":"lifetime","id":"0x1","ts":2,"pid":1,"tid":1,` + obj + `}`,
		"id of two objects": `{"ph":"b","name":"live","cat":"lifetime","id":"0x1","ts":1,"pid":1,"tid":1,` + obj + `},` +
			`{"ph":"e","name":"live","cat":"lifetime","id":"0x1","ts":2,"pid":1,"tid":2,"args":{"object":"p"}}`,
		"overlapping slices": `{"ph":"X","name":"a","ts":1,"dur":5,"pid":1,"tid":1,` + obj + `},{"ph":"X","name":"b","ts":3,"dur":5,"pid":1,"tid":1,` + obj + `}`,
		"flow without end":   `{"ph":"X","name":"a","ts":1,"dur":5,"pid":1,"tid":1,` + obj + `},{"ph":"s","id":"0x1","ts":1,"pid":1,"tid":1,` + obj + `}`,
		"unbound flow": `{"ph":"X","name":"a","ts":1,"dur":5,"pid":1,"tid":1,` + obj + `},{"ph":"s","id":"0x1","ts":1,"pid":1,"tid":1,` + obj + `},` +
			`{"ph":"f","bp":"e","id":"0x1","ts":9,"pid":1,"tid":2,` + obj + `}`,
		"no object": `{"ph":"i","name":"x","ts":1,"pid":1,"tid":1}`,
	}
	for name, evs := range cases {
		if err := lifetrace.Validate([]byte(`{"traceEvents":[` + evs + `]}`)); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}

func ExampleWriteChrome() {
	rec := lifetrace.NewRecorder(0)
	a := sever.NewActive("gpiochip0", sever.WithObserver(rec))
	_ = a.Sever(context.Background())
	var buf bytes.Buffer
	_ = lifetrace.WriteChrome(&buf, lifetrace.Run{Name: "example", Records: rec.Records()})
	var ct lifetrace.ChromeTrace
	_ = json.Unmarshal(buf.Bytes(), &ct)
	for _, e := range ct.TraceEvents {
		if e.Ph == "b" {
			fmt.Println(e.Name, "of", e.Args["object"])
		}
	}
	// Output:
	// live of gpiochip0
	// severing of gpiochip0
	// severed of gpiochip0
}

// TestSlicesClampedInFloatMicrosecondsDoNotOverlap: a sever slice clamped
// to end where a release begins must not overlap it once both are written
// as float microseconds (0.001 + (0.009 − 0.001) rounds past 0.009).
func TestSlicesClampedInFloatMicrosecondsDoNotOverlap(t *testing.T) {
	for _, at := range [][2]time.Duration{{1, 9}, {1, 13}, {2, 18}, {1100, 3300}} {
		ev := func(d time.Duration, e sever.Event) lifetrace.Record {
			e.ID, e.Type, e.Object = 1, "active", "x"
			return lifetrace.Record{T: d, Event: e}
		}
		recs := []lifetrace.Record{
			ev(0, sever.Event{Kind: sever.EventCreated, State: "live"}),
			ev(at[0], sever.Event{Kind: sever.EventSevering, State: "severing"}),
			ev(at[1], sever.Event{Kind: sever.EventReleased, State: "released"}),
			ev(at[1]+5000, sever.Event{Kind: sever.EventSevered, State: "severed"}),
		}
		var buf bytes.Buffer
		if err := lifetrace.WriteChrome(&buf, lifetrace.Run{Name: "clamp", Records: recs}); err != nil {
			t.Fatal(err)
		}
		if err := lifetrace.Validate(buf.Bytes()); err != nil {
			t.Errorf("sever at %v, release at %v: %v", at[0], at[1], err)
		}
	}
}
