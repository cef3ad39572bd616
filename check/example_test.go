package check_test

import (
	"context"
	"fmt"

	"github.com/sever-dev/sever/check"
)

// A machine's log audits releases and freed state.
func ExampleLog() {
	var log check.Log
	rel := log.Expect("/dev/uio0", "Release of open 1")
	pages := check.NewState(&log, "tcmu pages", make([]byte, 4096))

	pages.Free()      // tcmu frees its pages at unregister...
	pages.Use("mmap") // ...while the daemon still has them mapped
	_ = rel           // and the open's Release never runs
	for _, v := range log.Quiesce(context.Background()) {
		fmt.Println(v.Class, "-", v.Object)
	}
	// Output:
	// use after free - tcmu pages
	// release never run - /dev/uio0
}
