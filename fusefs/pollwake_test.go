package fusefs_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/kernfs"
)

// A process polling a file wakes with POLLERR|POLLHUP as soon as a Remove
// claims the file's node, while the Remove still drains a slow Show on
// another node of the subtree — when poll's answer changed, not when the
// drain reaches the polled node. The drain's order among siblings follows
// the directory's map, so the test repeats.
func TestPollWakesAtTheClaimWhileTheRemovalDrains(t *testing.T) {
	tr := kernfs.New()
	s := mount(t, fusefs.Sources{Sys: tr})
	py := startPy(t)
	for round := range 4 {
		dir, err := tr.AddDir(tr.Root(), kernfs.Dir{Name: "dev0"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.AddAttr(dir, kernfs.Attr{Name: "value", Show: func(_ *kernfs.Call, b []byte) ([]byte, error) {
			return append(b, "1\n"...), nil
		}}); err != nil {
			t.Fatal(err)
		}
		sub, _ := tr.AddDir(dir, kernfs.Dir{Name: "sub"})
		inShow, release := make(chan struct{}), make(chan struct{})
		slow, _ := tr.AddAttr(sub, kernfs.Attr{Name: "slow", Show: func(c *kernfs.Call, b []byte) ([]byte, error) {
			if c.Context().Value(slowKey{}) != nil {
				close(inShow)
				<-release
			}
			return append(b, "x\n"...), nil
		}})

		if r := py.do("open v " + path(s, "sys/dev0/value") + " r"); r != "ok" {
			t.Fatalf("round %d: open: %s", round, r)
		}
		py.do("read v")
		py.send("poll v 0xa 20000")
		eventually(t, "the kernel asks to be woken", func() bool { return s.Watchers() == 1 })

		reader, err := tr.OpenNode(slow, os.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = reader.ReadAtContext(context.WithValue(context.Background(), slowKey{}, 1), make([]byte, 8), 0)
		}()
		<-inShow
		removed := make(chan error)
		go func() { removed <- tr.Remove(context.Background(), dir) }()
		unblock := time.AfterFunc(3*time.Second, func() { close(release) }) // a lost wakeup fails, not hangs
		r := py.reply(6 * time.Second)
		if unblock.Stop() {
			close(release)
		} else {
			t.Errorf("round %d: the poller woke only after the drain ended", round)
		}
		if r != "24" {
			t.Errorf("round %d: poll while the removal drains: revents %s, want %d (POLLERR|POLLHUP) at the claim", round, r, pollErr|pollHup)
		}
		if err := <-removed; err != nil {
			t.Fatal(err)
		}
		if err := reader.Close(); err != nil {
			t.Fatal(err)
		}
		py.do("close v")
		eventually(t, "no wakeup is left registered", func() bool { return s.Watchers() == 0 })
	}
}

type slowKey struct{}
