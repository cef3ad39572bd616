package blockq_test

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
)

// A ram disk: the driver serves reads and writes from a byte slice. When it
// is unplugged, Kill stops the queue, and from then on the disk's memory is
// the driver's to free.
func Example() {
	const sectorSize = 8
	disk := make([]byte, 4*sectorSize)
	q := blockq.New("ram0", blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		off := rq.Sector * sectorSize
		switch rq.Op {
		case blockq.OpRead:
			copy(rq.Data, disk[off:])
		case blockq.OpWrite:
			copy(disk[off:], rq.Data)
		}
		return nil
	}), 0)
	ctx := context.Background()

	if err := q.Submit(ctx, &blockq.Request{Op: blockq.OpWrite, Sector: 2, Data: []byte("sectors!")}); err != nil {
		fmt.Println("write:", err)
	}
	rq := &blockq.Request{Op: blockq.OpRead, Sector: 2, Data: make([]byte, sectorSize)}
	err := q.Submit(ctx, rq)
	fmt.Printf("read %q, err %v\n", rq.Data, err)

	// Unplug: after Kill the driver is never called again.
	if err := q.Kill(ctx); err != nil {
		fmt.Println("kill:", err)
	}
	disk = nil

	err = q.Submit(ctx, rq)
	fmt.Println(err)
	fmt.Println(errors.Is(err, syscall.ENODEV))
	// Output:
	// read "sectors!", err <nil>
	// blockq: ram0: no such device
	// true
}

// Freeze quiesces the queue — every request admitted has completed and no
// new one reaches the driver — so the driver can change what its requests
// depend on, here the disk's size, with no request in flight.
func ExampleQueue_Freeze() {
	size := 1024
	q := blockq.New("ram1", blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		if rq.Sector >= int64(size) {
			return errors.New("beyond end of device")
		}
		return nil
	}), 0)
	ctx := context.Background()

	if err := q.Freeze(ctx); err != nil {
		fmt.Println("freeze:", err)
		return
	}
	size = 2048 // no QueueRq is running, and none starts until Unfreeze
	q.Unfreeze()

	fmt.Println(q.Submit(ctx, &blockq.Request{Op: blockq.OpRead, Sector: 1500}))
	if err := q.Kill(ctx); err != nil {
		fmt.Println("kill:", err)
	}
	// Output:
	// <nil>
}

// Kill with a checker: the queue's workers are accounted to the log, and
// after Kill the log quiesces clean — no goroutine left, no driver call
// after the unplug.
func ExampleQueue_Kill() {
	log := new(check.Log)
	q := blockq.New("sdb", blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
		return nil
	}), 4, sever.WithLog(log))
	ctx := context.Background()

	fmt.Println(q.Submit(ctx, &blockq.Request{Op: blockq.OpFlush}))
	fmt.Println(q.Kill(ctx))
	fmt.Println(q.Kill(ctx)) // idempotent
	fmt.Println(len(log.Quiesce(ctx)), "violations")
	// Output:
	// <nil>
	// <nil>
	// <nil>
	// 0 violations
}
