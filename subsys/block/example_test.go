package block_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/kernfs"
	"github.com/sever-dev/sever/subsys/block"
)

// A RAM disk on a host device. Its statistics and geometry are files in
// the machine's sysfs; when the host is unplugged the disk goes with it,
// and both the disk and the open file become shells that return ENODEV.
func Example() {
	ctx := context.Background()
	log := &check.Log{}
	machine := device.NewCore("example", log)
	host, _ := machine.Register(ctx, device.Config{Name: "host0"})

	mem := make([]byte, 8*block.SectorSize)
	disk, err := block.AddDisk(ctx, host, block.DiskConfig{
		Name: "ram0", Sectors: 8,
		Driver: blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
			off := rq.Sector * block.SectorSize
			switch rq.Op {
			case blockq.OpRead:
				copy(rq.Data, mem[off:])
			case blockq.OpWrite:
				copy(mem[off:], rq.Data)
			}
			return nil
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	buf := make([]byte, block.SectorSize)
	copy(buf, "hello")
	if err := disk.Submit(ctx, &blockq.Request{Op: blockq.OpWrite, Sector: 3, Data: buf}); err != nil {
		fmt.Println("submit:", err)
	}
	rq := &blockq.Request{Op: blockq.OpRead, Sector: 3, Data: make([]byte, block.SectorSize)}
	if err := disk.Submit(ctx, rq); err != nil {
		fmt.Println("submit:", err)
	}
	fmt.Printf("read %q\n", rq.Data[:5])

	size, _ := machine.Sysfs().Open("/block/ram0/size", os.O_RDONLY)
	b, _ := io.ReadAll(size)
	fmt.Printf("size %s", b)
	stat, _ := machine.Sysfs().Open("/block/ram0/stat", os.O_RDONLY)
	b, _ = io.ReadAll(stat)
	f := strings.Fields(string(b))
	fmt.Println("reads", f[0], "sectors read", f[2], "writes", f[4], "sectors written", f[6])

	if err := host.Unregister(ctx); err != nil { // the hot-unplug: the disk is deleted first
		fmt.Println("unregister:", err)
	}

	err = disk.Submit(ctx, rq)
	fmt.Println(err, errors.Is(err, syscall.ENODEV))
	_, err = stat.Read(b)
	fmt.Println(err)
	if err := stat.Close(); err != nil {
		fmt.Println("close:", err)
	}
	if err := size.Close(); err != nil {
		fmt.Println("close:", err)
	}
	fmt.Println(len(log.Quiesce(ctx)), "violations")
	// Output:
	// read "hello"
	// size 8
	// reads 1 sectors read 1 writes 1 sectors written 1
	// block: ram0: no such device true
	// kernfs: /devices/host0/ram0/stat: no such device
	// 0 violations
}

// zram's reset: writing to an attribute of the disk deletes the disk. The
// Store calls DelSelf, which does not wait for the Store itself.
func ExampleDisk_DelSelf() {
	ctx := context.Background()
	log := &check.Log{}
	machine := device.NewCore("example", log)
	host, _ := machine.Register(ctx, device.Config{Name: "zram-control"})
	nop := blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error { return nil })

	reset := block.Attr{Name: "reset", Parse: kernfs.Bool(),
		Store: func(c *kernfs.Call, d *block.Disk, v any) error {
			if !v.(bool) {
				return nil
			}
			return d.DelSelf(ctx, c) // not d.Del: that would wait for this Store
		}}
	disk, _ := block.AddDisk(ctx, host, block.DiskConfig{Name: "zram0", Sectors: 8, Driver: nop, Attrs: []block.Attr{reset}})

	f, _ := machine.Sysfs().Open("/block/zram0/reset", os.O_WRONLY)
	_, err := f.Write([]byte("1\n"))
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
	}
	fmt.Println("reset:", err)
	fmt.Println("deleted:", disk.Deleted())
	_, err = machine.Sysfs().Lookup("/block/zram0")
	fmt.Println(err)

	if err := host.Unregister(ctx); err != nil {
		fmt.Println("unregister:", err)
	}
	fmt.Println(len(log.Quiesce(ctx)), "violations")
	// Output:
	// reset: <nil>
	// deleted: true
	// kernfs: /block/zram0: no such file or directory
	// 0 violations
}
