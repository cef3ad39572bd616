package fusefs_test

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/kernfs"
)

// wideTree is dirs directories of per attributes each, every attribute
// showing its own path's index.
func wideTree(tb testing.TB, dirs, per int) *kernfs.Tree {
	tb.Helper()
	tr := kernfs.New()
	for d := range dirs {
		dir, err := tr.AddDir(tr.Root(), kernfs.Dir{Name: "d" + strconv.Itoa(d)})
		if err != nil {
			tb.Fatal(err)
		}
		for a := range per {
			text := strconv.Itoa(d*per+a) + "\n"
			if _, err := tr.AddAttr(dir, kernfs.Attr{Name: "a" + strconv.Itoa(a), Mode: 0o444, Show: func(_ *kernfs.Call, b []byte) ([]byte, error) {
				return append(b, text...), nil
			}}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return tr
}

// findCat lists every regular file under dir with find and reads each with
// cat; it returns the number of files listed and the bytes cat printed.
func findCat(tb testing.TB, dir string) (int, []byte) {
	tb.Helper()
	list, err := exec.Command("find", dir, "-type", "f").Output()
	if err != nil {
		tb.Fatalf("find: %v", err)
	}
	files := strings.Count(string(list), "\n")
	cmd := exec.Command("sh", "-c", `find "$1" -type f -exec cat {} +`, "sh", dir)
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("find -exec cat: %v", err)
	}
	return files, out
}

// find and cat see every node of a tree wider than a READDIR reply, and
// read each one's own content: readdir's offsets resume where the last
// reply stopped, no entry lost or repeated.
func TestFindAndCatSeeEveryNode(t *testing.T) {
	const dirs, per = 4, 500
	s := mount(t, fusefs.Sources{Sys: wideTree(t, dirs, per)})
	files, out := findCat(t, path(s, "sys"))
	if files != dirs*per {
		t.Errorf("find listed %d files, want %d", files, dirs*per)
	}
	seen := make([]bool, dirs*per)
	for _, l := range strings.Fields(string(out)) {
		i, err := strconv.Atoi(l)
		if err != nil || i < 0 || i >= len(seen) || seen[i] {
			t.Fatalf("cat printed %q: not a new node's content", l)
		}
		seen[i] = true
	}
	for i, ok := range seen {
		if !ok {
			t.Fatalf("node %d was never read", i)
		}
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkFindCat serves SEVER_BENCH_NODES attributes (default 100,000,
// in directories of 1,000) and times `find -type f` and `find -exec cat`
// over all of them, per node. It reports the heap per node the tree takes
// (kernfs) and what the mount adds per node the kernel holds an entry for
// (fusefs's inode table), both idle: measured after a GC, nothing open.
//
//	go test -run '^$' -bench FindCat -benchtime 1x ./fusefs/
func BenchmarkFindCat(b *testing.B) {
	nodes := 100_000
	if n, err := strconv.Atoi(os.Getenv("SEVER_BENCH_NODES")); err == nil && n > 0 {
		nodes = n
	}
	per := min(nodes, 1000)
	dirs := nodes / per
	nodes = dirs * per
	h0 := heap()
	tr := wideTree(b, dirs, per)
	h1 := heap()
	s := mount(b, fusefs.Sources{Sys: tr}, fusefs.EntryTimeout(time.Hour))
	h2 := heap()
	b.ResetTimer()
	var findNs, catNs float64
	for range b.N {
		t0 := time.Now()
		list, err := exec.Command("find", path(s, "sys"), "-type", "f").Output()
		if err != nil {
			b.Fatal(err)
		}
		findNs += float64(time.Since(t0).Nanoseconds())
		if got := bytes.Count(list, []byte("\n")); got != nodes {
			b.Fatalf("find listed %d files, want %d", got, nodes)
		}
		t0 = time.Now()
		out, err := exec.Command("sh", "-c", `find "$1" -type f -exec cat {} + | wc -l`, "sh", path(s, "sys")).Output()
		if err != nil {
			b.Fatal(err)
		}
		catNs += float64(time.Since(t0).Nanoseconds())
		if got, _ := strconv.Atoi(strings.TrimSpace(string(out))); got != nodes {
			b.Fatalf("cat printed %d lines, want %d", got, nodes)
		}
	}
	b.StopTimer()
	h3 := heap()
	b.ReportMetric(findNs/float64(b.N)/float64(nodes)/1e3, "find-µs/node")
	b.ReportMetric(catNs/float64(b.N)/float64(nodes)/1e3, "find+cat-µs/node")
	b.ReportMetric(float64(h1-h0)/float64(nodes), "kernfs-B/node")
	b.ReportMetric((float64(h3)-float64(h2))/float64(nodes), "fusefs-B/known-node")
	b.Logf("%d nodes; find %.2fs, find+cat %.2fs; heap: tree %d B, mount %d B, after find+cat +%d B", nodes,
		findNs/float64(b.N)/1e9, catNs/float64(b.N)/1e9, h1-h0, h2-h1, int64(h3)-int64(h2))
}
