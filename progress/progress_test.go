package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPlainLinesCarryEveryCount(t *testing.T) {
	var buf bytes.Buffer
	m := New(&buf, "sever stress", "ops", 0)
	m.Update(Status{Done: 250, Total: 1000, Rounds: 3, Findings: 2, Note: "seed 7"})
	m.Finish(Status{Done: 1000, Total: 1000, Rounds: 4, Findings: 2})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want an update and a final line:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"sever stress: 250/1000 ops (25%)", "ops/s", "round 3", "2 findings", "elapsed", "left", "seed 7"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line %q lacks %q", lines[0], want)
		}
	}
	if strings.ContainsAny(buf.String(), "\r\x1b") {
		t.Errorf("plain output has terminal control characters: %q", buf.String())
	}
}

func TestPlainLinesAreSpacedAndAShortRunIsSilent(t *testing.T) {
	var buf bytes.Buffer
	m := New(&buf, "x", "runs", time.Hour)
	for i := range 100 {
		m.Update(Status{Done: int64(i), Total: 100})
	}
	m.Finish(Status{Done: 100, Total: 100})
	if buf.Len() != 0 {
		t.Errorf("a run shorter than the interval printed %q", buf.String())
	}
	buf.Reset()
	m = New(&buf, "x", "runs", 0)
	m.every = 50 * time.Millisecond // silent start already over: start is earlier
	m.start = time.Now().Add(-time.Second)
	for i := range 100 {
		m.Update(Status{Done: int64(i), Total: 100})
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("100 quick updates printed %d lines, want 1 per interval", n)
	}
}

func TestTerminalLineIsRedrawnInPlace(t *testing.T) {
	var buf bytes.Buffer
	m := New(&buf, "sever stress", "ops", 0)
	m.tty = true // as New decides for an *os.File on a terminal
	m.Update(Status{Done: 10, Left: 5 * time.Second, Rounds: 1})
	m.Finish(Status{Done: 20, Rounds: 2, Findings: 1})
	out := buf.String()
	if !strings.Contains(out, "\r") || !strings.Contains(out, "1 findings") || !strings.HasSuffix(out, "\n") {
		t.Errorf("the live line is not redrawn in place and ended: %q", out)
	}
}

func TestTimeLeftIsEstimatedFromTheRate(t *testing.T) {
	m := New(&bytes.Buffer{}, "x", "ops", 0)
	l := m.line(Status{Done: 25, Total: 100}, 10*time.Second)
	if !strings.Contains(l, "10s elapsed, 30s left") || !strings.Contains(l, "2 ops/s") {
		t.Errorf("line %q: want 10s elapsed, 30s left at 2-3 ops/s", l)
	}
}
