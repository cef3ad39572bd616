package kernfs_test

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/sever-dev/sever/kernfs"
)

// TestShowPanicWithoutALogFailsTheReadWithEIO: the one fault policy holds
// on a tree without a checker too — kernfs used to re-raise the panic.
func TestShowPanicWithoutALogFailsTheReadWithEIO(t *testing.T) {
	tr := kernfs.New()
	if _, err := tr.AddAttr(tr.Root(), kernfs.Attr{Name: "bad", Show: func(*kernfs.Call, []byte) ([]byte, error) { panic("driver bug") }}); err != nil {
		t.Fatal(err)
	}
	f, err := tr.Open("/bad", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, f)
	if _, err := f.Read(make([]byte, 16)); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a panicking Show without a log: %v, want EIO", err)
	}
}
