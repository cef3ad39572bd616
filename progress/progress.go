// Package progress shows how far a long run has got: on a terminal a live
// line redrawn in place (a schollz/progressbar bar with the run's counts),
// anywhere else a plain line now and then, so a log file or a CI console
// gets a readable trail instead of control characters.
//
// A Meter stays silent for its first interval, so a run that ends within a
// few seconds prints nothing.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Status is how far a run has got.
type Status struct {
	Done     int64         // units done: operations, runs
	Total    int64         // units the run will do; 0 if it ends by time
	Rounds   int           // rounds finished, for runs made of rounds; 0: not shown
	Findings int           // what the run found so far: violations, failed runs
	Left     time.Duration // time left for a run that ends by time; 0: estimated from Done and Total
	Note     string        // said last ("seed 7"); "": nothing
}

// Meter draws a run's Status. Its methods may be called from any goroutine.
type Meter struct {
	w     io.Writer
	label string // "sever stress"
	unit  string // "ops", "runs"
	every time.Duration
	tty   bool
	start time.Time

	mu      sync.Mutex
	bar     *progressbar.ProgressBar // the live line, once shown
	last    time.Time                // when the last plain line was printed
	printed bool
}

// New returns a Meter writing to w, which is a terminal's live line if w is
// an *os.File on a terminal. label begins each line, unit names what Done
// counts; every is both the silent start and, off a terminal, the interval
// between lines (0: no silence, a line per Update).
func New(w io.Writer, label, unit string, every time.Duration) *Meter {
	m := &Meter{w: w, label: label, unit: unit, every: every, start: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		m.tty = true
	}
	return m
}

// Update shows s if it is time to: on a terminal at most ten times a second
// once the silent start is over, elsewhere once per interval.
func (m *Meter) Update(s Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if now.Sub(m.start) < m.every {
		return
	}
	if m.tty {
		m.drawLocked(s)
		return
	}
	if m.printed && now.Sub(m.last) < m.every {
		return
	}
	m.last, m.printed = now, true
	_, _ = fmt.Fprintln(m.w, m.line(s, now.Sub(m.start))) // progress is a courtesy: a lost line changes nothing
}

// Finish shows the final s and ends the live line, if anything was shown.
// A run that never got past the silent start prints nothing.
func (m *Meter) Finish(s Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.bar != nil:
		m.drawLocked(s)
		_ = m.bar.Exit()
		_, _ = fmt.Fprintln(m.w) // progress is a courtesy, as in Update
	case m.printed:
		_, _ = fmt.Fprintln(m.w, m.line(s, time.Since(m.start)))
	}
}

func (m *Meter) drawLocked(s Status) {
	total, cur := s.Total, s.Done
	if total <= 0 { // ends by time: the bar shows time, per mille
		el := time.Since(m.start)
		total, cur = 1000, 1000*int64(el)/max(int64(el+s.Left), 1)
	}
	if m.bar == nil {
		m.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(m.w),
			progressbar.OptionSetWidth(24),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
	m.bar.ChangeMax64(total)
	m.bar.Describe(m.line(s, time.Since(m.start)))
	_ = m.bar.Set64(min(cur, total))
}

// line is the text of s after elapsed: "sever stress: 120000/1000000 ops
// (12%), 52000 ops/s, round 3, 0 findings, 2s elapsed, 17s left, seed 7".
func (m *Meter) line(s Status, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d", m.label, s.Done)
	if s.Total > 0 {
		fmt.Fprintf(&b, "/%d %s (%d%%)", s.Total, m.unit, 100*s.Done/s.Total)
	} else {
		fmt.Fprintf(&b, " %s", m.unit)
	}
	if sec := elapsed.Seconds(); sec > 0 {
		fmt.Fprintf(&b, ", %.0f %s/s", float64(s.Done)/sec, m.unit)
	}
	if s.Rounds > 0 {
		fmt.Fprintf(&b, ", round %d", s.Rounds)
	}
	fmt.Fprintf(&b, ", %d findings, %v elapsed", s.Findings, elapsed.Round(time.Second))
	left := s.Left
	if left == 0 && s.Total > 0 && s.Done > 0 && s.Done < s.Total {
		left = time.Duration(float64(elapsed) * float64(s.Total-s.Done) / float64(s.Done))
	}
	if left > 0 {
		fmt.Fprintf(&b, ", %v left", left.Round(time.Second))
	}
	if s.Note != "" {
		b.WriteString(", " + s.Note)
	}
	return b.String()
}
