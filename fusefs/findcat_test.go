package fusefs_test

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sever-dev/sever/fusefs"
)

// find+cat over a directory costs the kernel's minimum of requests per
// file: one LOOKUP (entries and attributes are cached, so no second
// LOOKUP and no GETATTR per file), one OPEN, at most two READs (cat's
// data, then its end of file; direct I/O sends both), one RELEASE, and
// no FLUSH (the open says FOPEN_NOFLUSH). More than that per file — a
// timeout set to 0, a handle that asks for flushes — multiplies the cost
// of every tree walk; see BENCHMARKS.md, "100,000 nodes to find and cat".
func TestFindCatRequestsPerFile(t *testing.T) {
	const files = 200
	var mu sync.Mutex
	counting := false
	counts := map[string]int{}
	s := mount(t, fusefs.Sources{Sys: wideTree(t, 1, files)}, fusefs.EntryTimeout(time.Hour), fusefs.Debug(func(msg any) {
		op, _, _ := strings.Cut(msg.(string), " ")
		mu.Lock()
		defer mu.Unlock()
		if counting {
			counts[op]++
		}
	}))
	dir := path(s, "sys")
	if err := exec.Command("find", dir, "-type", "f").Run(); err != nil { // the directories' entries, listed once
		t.Fatalf("find: %v", err)
	}
	mu.Lock()
	counting = true
	mu.Unlock()
	out, err := exec.Command("sh", "-c", `find "$1" -type f -exec cat {} +`, "sh", dir).Output()
	mu.Lock()
	counting = false
	got := counts
	mu.Unlock()
	if err != nil {
		t.Fatalf("find -exec cat: %v", err)
	}
	if n := strings.Count(string(out), "\n"); n != files {
		t.Fatalf("cat printed %d lines, want %d", n, files)
	}
	t.Logf("requests for %d files: %v", files, got)
	for op, most := range map[string]int{
		"LOOKUP":  files,
		"OPEN":    files,
		"READ":    2 * files,
		"RELEASE": files,
		"GETATTR": files / 10, // a few, for directories; none per file
		"FLUSH":   0,
	} {
		if got[op] > most {
			t.Errorf("%d %s requests for %d files, want at most %d", got[op], op, files, most)
		}
	}
	if got["OPEN"] != files {
		t.Errorf("%d OPEN requests for %d files: each file is opened once", got["OPEN"], files)
	}
}
