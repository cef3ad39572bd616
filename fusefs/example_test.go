package fusefs_test

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/kernfs"
)

// Serving your own kernfs tree to real processes is one call: build the
// tree, Mount it, and every process on the machine can cat and poll its
// attributes under dir/sys. Close unmounts, also while processes still
// hold files open (their descriptors then fail with ENOTCONN). It needs
// FUSE: root, or fusermount3 from the fuse3 package.
func ExampleMount() {
	tr := kernfs.New()
	dev, _ := tr.AddDir(tr.Root(), kernfs.Dir{Name: "thermal"})
	if _, err := tr.AddAttr(dev, kernfs.Attr{Name: "temp", Mode: 0o444, Show: func(_ *kernfs.Call, b []byte) ([]byte, error) {
		return append(b, "42000\n"...), nil
	}}); err != nil {
		log.Fatal(err)
	}

	dir, _ := os.MkdirTemp("", "sever-example-")
	defer func() { _ = os.Remove(dir) }() // a temporary directory left behind harms nothing
	m, err := fusefs.Mount(dir, fusefs.Sources{Sys: tr})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			log.Fatal(err)
		}
	}()

	// Another process reads it (never the serving process itself).
	out, err := exec.Command("cat", filepath.Join(dir, "sys/thermal/temp")).Output()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(out))
}
