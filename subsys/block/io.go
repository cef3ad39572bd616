package block

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
)

// Submit performs rq on the disk and returns its result: it checks rq
// against the disk, passes it to the queue, waits for the driver, and
// accounts it in the disk's statistics. It may be called from any number
// of goroutines at once; rq belongs to the disk until Submit returns (see
// blockq.Request).
//
// rq.Sector is in 512-byte sectors. A read, write or discard covers
// len(rq.Data) bytes, which must be a positive multiple of the logical
// block size, at a sector aligned to it; a flush covers nothing. Submit
// fails, without the driver being called, with an error naming the disk
// and wrapping:
//
//   - sever.ErrNoDevice (ENODEV) once the disk is being deleted, and for a
//     request still queued when the queue is killed;
//   - ErrReadOnly (EROFS) for a write or discard to a read-only disk;
//   - sever.ErrInvalid (EINVAL) for a misaligned or empty request;
//   - sever.ErrIO (EIO) for one that reaches beyond the disk's capacity
//     ("attempt to access beyond end of device");
//   - ctx's error if ctx is done before the driver has rq (see
//     blockq.Queue.Submit).
//
// Otherwise it returns the driver's error, named with the disk if it names
// nothing. Every error the disk or its queue makes reads "block: <disk>: ...". A request with the driver when deletion begins runs to its end.
func (d *Disk) Submit(ctx context.Context, rq *blockq.Request) error {
	if d.dying.Load() {
		return d.gone
	}
	if err := d.check(rq); err != nil {
		return &sever.ObjectError{Object: d.obj, Err: err}
	}
	dir := dirOf(rq.Op)
	d.stats.inFlight[dir].Add(1)
	d.stats.busy(1)
	err := d.q.Submit(ctx, rq)
	d.stats.busy(-1)
	d.stats.inFlight[dir].Add(-1)
	if err != nil {
		// Name the disk: the queue's own errors ("blockq: sda: ...") are
		// renamed, the driver's are named unless they name something.
		var oe *sever.ObjectError
		switch {
		case !errors.As(err, &oe):
			err = &sever.ObjectError{Object: d.obj, Err: err}
		case oe == err && oe.Object == "blockq: "+d.name:
			err = &sever.ObjectError{Object: d.obj, Err: oe.Err}
		}
	}
	return err
}

// check validates rq against the disk's state and geometry.
func (d *Disk) check(rq *blockq.Request) error {
	op := rq.Op
	switch op {
	case blockq.OpFlush:
		return nil
	case blockq.OpRead, blockq.OpWrite, blockq.OpDiscard:
	default:
		return fmt.Errorf("unknown operation %v: %w", op, sever.ErrNotSupported)
	}
	if op != blockq.OpRead && d.ro.Load() {
		return fmt.Errorf("%v at sector %d: %w", op, rq.Sector, ErrReadOnly)
	}
	n := int64(len(rq.Data))
	if n == 0 || n%d.lbs != 0 || rq.Sector < 0 || rq.Sector*SectorSize%d.lbs != 0 {
		return fmt.Errorf("%v of %d bytes at sector %d is not aligned to the %d-byte logical block: %w",
			op, n, rq.Sector, d.lbs, sever.ErrInvalid)
	}
	if end, capacity := rq.Sector+n/SectorSize, d.capacity.Load(); end > capacity {
		return fmt.Errorf("%v of sectors [%d, %d) beyond end of device (%d sectors): %w",
			op, rq.Sector, end, capacity, sever.ErrIO)
	}
	return nil
}

// accountingDriver is the driver as the queue sees it: it runs the real
// driver as its owner's code and accounts every request that reached it,
// whatever its result, as Linux accounts requests at completion.
type accountingDriver struct {
	d   *Disk
	drv blockq.Driver
}

func (a *accountingDriver) QueueRq(ctx context.Context, rq *blockq.Request) error {
	d := a.d
	start := time.Now()
	var err error
	if o := d.owner; o != nil {
		if !o.Call(d.obj+": QueueRq", func() { err = a.drv.QueueRq(ctx, rq) }) {
			return d.gone
		}
	} else {
		err = a.drv.QueueRq(ctx, rq)
	}
	s := &d.stats.ops[rq.Op]
	s.ios.Add(1)
	if rq.Op != blockq.OpFlush {
		s.sectors.Add(uint64(len(rq.Data) / SectorSize))
	}
	s.nanos.Add(uint64(time.Since(start)))
	return err
}

// Direction of a request, for in_flight: reads, and everything else (as
// Linux counts by rq_data_dir).
const (
	dirRead = iota
	dirWrite
)

func dirOf(op blockq.Op) int {
	if op == blockq.OpRead {
		return dirRead
	}
	return dirWrite
}

// stats is a disk's I/O accounting, all atomics: Submit and the queue's
// workers update it without a lock, and Show reads a snapshot that may mix
// counts of a request completing meanwhile, as Linux's does.
type stats struct {
	ops      [blockq.OpDiscard + 1]opStats // indexed by Op
	inFlight [2]atomic.Int64               // dirRead, dirWrite
	inDisk   atomic.Int64                  // both directions, for busy time
	since    atomic.Int64                  // unix nanos when inDisk last rose from 0
	busyNs   atomic.Int64                  // completed busy periods
}

type opStats struct {
	ios, sectors, nanos atomic.Uint64
}

// busy tracks io_ticks: time with at least one request submitted. A busy
// period that ends and another that begins at the same instant may lose a
// few nanoseconds; io_ticks is a sampled approximation in Linux too.
func (s *stats) busy(delta int64) {
	now := time.Now().UnixNano()
	switch n := s.inDisk.Add(delta); {
	case delta > 0 && n == 1:
		s.since.Store(now)
	case delta < 0 && n == 0:
		s.busyNs.Add(now - s.since.Load())
	}
}

// OpStat is the accounting of one kind of request: how many completed,
// how many 512-byte sectors they covered, and how long the driver took
// over them in total.
type OpStat struct {
	IOs     uint64
	Sectors uint64
	Time    time.Duration
}

// Stat is a snapshot of a disk's I/O statistics, the numbers of its stat
// file. Requests are counted when the driver completes them, whatever
// their result; requests refused by Submit or failed before reaching the
// driver are not counted.
type Stat struct {
	Read, Write, Discard, Flush OpStat
	// InFlightReads and InFlightWrites are the requests inside Submit now,
	// queued or with the driver; discards and flushes count as writes.
	InFlightReads, InFlightWrites int64
	// IOTime is the time the disk had at least one request in flight
	// (io_ticks).
	IOTime time.Duration
}

// Stat returns the disk's I/O statistics now. It may be called at any
// time, also after the disk is deleted.
func (d *Disk) Stat() Stat {
	s := &d.stats
	op := func(o blockq.Op) OpStat {
		x := &s.ops[o]
		return OpStat{IOs: x.ios.Load(), Sectors: x.sectors.Load(), Time: time.Duration(x.nanos.Load())}
	}
	st := Stat{
		Read: op(blockq.OpRead), Write: op(blockq.OpWrite), Discard: op(blockq.OpDiscard), Flush: op(blockq.OpFlush),
		InFlightReads: s.inFlight[dirRead].Load(), InFlightWrites: s.inFlight[dirWrite].Load(),
		IOTime: time.Duration(s.busyNs.Load()),
	}
	if s.inDisk.Load() > 0 { // the current busy period so far
		if since := s.since.Load(); since != 0 {
			st.IOTime += time.Duration(time.Now().UnixNano() - since)
		}
	}
	return st
}

// appendStat formats st as /sys/block/<disk>/stat does: seventeen fields
// (Documentation/block/stat.rst); merges are always 0, times are in
// milliseconds, time_in_queue is the sum of the four operation times.
func appendStat(buf []byte, st Stat) []byte {
	ms := func(t time.Duration) uint64 { return uint64(t / time.Millisecond) }
	inQueue := st.Read.Time + st.Write.Time + st.Discard.Time + st.Flush.Time
	return fmt.Appendf(buf, "%8d %8d %8d %8d %8d %8d %8d %8d %8d %8d %8d %8d %8d %8d %8d %8d %8d\n",
		st.Read.IOs, 0, st.Read.Sectors, ms(st.Read.Time),
		st.Write.IOs, 0, st.Write.Sectors, ms(st.Write.Time),
		st.InFlightReads+st.InFlightWrites, ms(st.IOTime), ms(inQueue),
		st.Discard.IOs, 0, st.Discard.Sectors, ms(st.Discard.Time),
		st.Flush.IOs, ms(st.Flush.Time))
}
