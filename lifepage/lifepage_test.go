package lifepage_test

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/lifepage"
	"github.com/sever-dev/sever/lifetrace"
)

// run records an Active severed while a call is inside, and, if naive, a
// violation about it.
func run(naive bool) []lifetrace.Record {
	rec := lifetrace.NewRecorder(0)
	var log check.Log
	sever.ObserveLog(&log, rec)
	a := sever.NewActive("dev/value", sever.WithObserver(rec), sever.WithLog(&log))
	tok, _ := a.Enter()
	rec.Observe(sever.Event{Kind: sever.EventNote, Object: "dev/value", State: "entered", Detail: "show"})
	rec.Observe(sever.Event{Kind: sever.EventNote, Object: "scenario", State: "step", Detail: "unplug dev"})
	go func() { <-a.Severed(); a.Exit(&tok) }()
	_ = a.Sever(context.Background())
	_ = a.Do(func() error { return nil })
	if naive {
		log.Record(check.Violation{Class: check.CallbackAfterSever, Object: "dev/value", Detail: "show <ran> after sever"})
	}
	return rec.Records()
}

func page(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	err := lifepage.Write(&buf, "test page", []lifepage.Section{{
		Name: "s", Title: "a removal", Doc: "seed 000",
		Runs: []lifepage.Run{
			{Label: "correct", Verdict: "clean", Records: run(false)},
			{Label: "naive", Verdict: "caught", Caught: true, Note: "the bug", Records: run(true)},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestPageShowsLanesStatesMomentAndViolationText(t *testing.T) {
	p := page(t)
	for _, want := range []string{
		`class="run" data-variant="correct"`, `class="run" data-variant="naive"`,
		`data-object="active dev/value"`, `class="state s-live"`, `class="state s-severing"`, `class="state s-severed"`,
		`class="sever"`, `class="call"`, `class="refused"`, `class="moment removal"`, `>unplug<`,
		`class="violation"`, `show &lt;ran&gt; after sever`, "planted: the bug", ">waited for 1<",
	} {
		if !strings.Contains(p, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if n := strings.Count(p, `class="violation-text"`); n != 1 {
		t.Errorf("%d violations listed, want the naive run's one", n)
	}
}

// The page must open from a file with no network: nothing it loads may
// come from elsewhere.
func TestPageFetchesNothing(t *testing.T) {
	p := page(t)
	if m := regexp.MustCompile(`(?i)(src|href)\s*=|@import|url\(|fetch\(|XMLHttpRequest|https?://`).FindString(p); m != "" {
		t.Errorf("the page refers to something outside it: %q", m)
	}
}

func ExampleWrite() {
	rec := lifetrace.NewRecorder(0)
	a := sever.NewActive("gpiochip0", sever.WithObserver(rec))
	_ = a.Sever(context.Background())
	var buf bytes.Buffer
	_ = lifepage.Write(&buf, "one Active", []lifepage.Section{{Name: "ex", Runs: []lifepage.Run{{Label: "run", Verdict: "clean", Records: rec.Records()}}}})
	fmt.Println(strings.Count(buf.String(), `class="lane"`), "lane")
	// Output: 1 lane
}
