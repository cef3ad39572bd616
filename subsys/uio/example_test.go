package uio_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/chardev"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/subsys/uio"
)

// A process waits for interrupts on /dev/uio0 with its data area mapped.
// The device is unplugged: the blocked read returns EIO, the mapping stays
// valid, and the data area is freed when the process lets go.
func Example() {
	ctx := context.Background()
	log := &check.Log{}
	machine := device.NewCore("example", log)
	parent, _ := machine.Register(ctx, device.Config{Name: "tcmu0"})
	pages, _ := sever.NewRegion("tcmu data area", make([]byte, 4096), sever.WithLog(log))
	u, _ := uio.Register(ctx, parent, uio.Info{Name: "tcm-user", Regions: []*sever.Region{pages}})

	f, _ := chardev.RegistryOf(machine).Open("uio0", os.O_RDWR)
	m, _ := f.Mmap(0)

	u.Interrupt()
	buf := make([]byte, 4)
	if _, err := f.Read(buf); err != nil {
		fmt.Println("read:", err)
	}
	fmt.Println("interrupts:", binary.LittleEndian.Uint32(buf))

	done := make(chan error)
	go func() { _, err := f.ReadContext(ctx, buf); done <- err }()
	if err := parent.Unregister(ctx); err != nil { // the unplug, while the read is blocked
		fmt.Println("unregister:", err)
	}
	fmt.Println("blocked read:", <-done)
	fmt.Println("mapping still there:", len(m.Bytes()))
	if err := m.Unmap(); err != nil {
		fmt.Println("unmap:", err)
	}
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	fmt.Println("data area freed:", pages.Freed())
	fmt.Println("violations:", len(log.Quiesce(ctx)))
	// Output:
	// interrupts: 1
	// blocked read: chardev: /dev/uio0: input/output error
	// mapping still there: 4096
	// data area freed: true
	// violations: 0
}
