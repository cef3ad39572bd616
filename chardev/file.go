package chardev

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/internal/mutation"
)

// File is an open char device: a shell the framework owns. It holds the
// open's Private, the wait queue its pollers and blocked readers sleep on,
// and a hold on each of the device's regions.
//
//	open ──device unregistered──▶ severed ──Close──▶ closed ──last reference──▶ freed
//	  └────────────────────────────Close──────────────▲
//
// open: operations call the driver's Ops. severed: the unregistration ran
// the open's Release; every operation returns the device's Gone error
// (ENODEV, or EIO for uio-like devices) and Poll reports
// EventErr|EventHup. closed: Close ran the Release if the unregistration
// had not; every operation returns an error wrapping sever.ErrClosed
// (EBADF). freed: the last reference (Close's, the device's open list's,
// a Wait in progress) is put; the wait queue is freed and the holds on the
// regions dropped — no driver code runs here.
//
// A File may be used from many goroutines at once; operations on it run
// concurrently, as they do on a Linux file. Close waits for the operations
// in flight on this File (not for a Read or Wait that is waiting, which
// Close wakes) before it runs Release.
type File struct {
	c        *Cdev
	call     Call
	id       uint64
	canRead  bool
	canWrite bool
	nonblock bool
	private  any
	ref      *sever.Ref
	q        *sever.WaitQueue
	pending  *check.Pending

	// rw is held shared by each operation inside the driver and exclusively
	// by Close around Release, so Release never overlaps a call of its open.
	rw       sync.RWMutex
	closed   atomic.Bool
	released atomic.Bool // the open's Release has been claimed
}

// Tags of the references on a File's Ref besides its creator's (nil, put by
// Close).
type refTag string

const (
	tagOpenList refTag = "open list"
	tagWait     refTag = "Wait"
)

// Cdev returns the char device the file is open on.
func (f *File) Cdev() *Cdev { return f.c }

// free runs at the last reference: framework-owned memory only.
func (f *File) free() {
	f.q.Free()
	for _, r := range f.c.regions {
		r.Put()
	}
}

// release runs the driver's Release for this open, once across Close and
// Unregister, and then drops the open's pin on the owner.
func (f *File) release() {
	if f.released.Swap(true) {
		return
	}
	c := f.c
	if rel := c.ops.Release; rel != nil {
		c.invoke(siteRelease, func() { rel(&f.call) })
		if mutation.ReleaseTwice { // a planted bug: see package internal/mutation
			c.invoke(siteRelease, func() { rel(&f.call) })
		}
	}
	f.pending.Done()
	if c.owner != nil {
		c.owner.Put(f)
	}
}

// enter begins an operation in the driver: it takes f.rw shared and enters
// the device's active reference.
func (f *File) enter(tok *sever.Token) error {
	if f.closed.Load() {
		return f.c.closed
	}
	f.rw.RLock()
	if f.closed.Load() { // Close won the race for rw
		f.rw.RUnlock()
		return f.c.closed
	}
	c := f.c
	var ok bool
	if *tok, ok = c.a.Enter(); !ok {
		f.rw.RUnlock()
		return c.gone
	}
	// Deny from the moment the owner starts unloading: its hook is about
	// to sever the device.
	if o := c.owner; o != nil && o.State() != sever.OwnerLive {
		c.a.Exit(tok)
		f.rw.RUnlock()
		return c.gone
	}
	return nil
}

func (f *File) exit(tok *sever.Token) {
	f.c.a.Exit(tok)
	f.rw.RUnlock()
}

func wouldBlock(err error) bool {
	return err != nil && errors.Is(err, syscall.EAGAIN)
}

// Read is ReadContext without a deadline.
func (f *File) Read(p []byte) (int, error) { return f.ReadContext(context.Background(), p) }

// ReadContext reads from the device through Ops.Read. If the driver has
// nothing yet (sever.ErrWouldBlock) a blocking File waits — outside the
// device, on its own wait queue — until the driver calls Notify, and reads
// again; it stops waiting when the device is unregistered (returning the
// Gone error), the File is closed (an error wrapping ErrClosed) or ctx is
// done (ctx's error). A non-blocking File returns an error wrapping EAGAIN.
// Errors name the device; Read on a file not open for reading wraps EBADF.
func (f *File) ReadContext(ctx context.Context, p []byte) (int, error) {
	n, err := f.read(p)
	if f.nonblock || !wouldBlock(err) {
		return n, err
	}
	return f.block(ctx, func() (int, error) { return f.read(p) })
}

func (f *File) read(p []byte) (n int, err error) {
	var tok sever.Token
	err = f.enter(&tok)
	if err != nil {
		return 0, err
	}
	defer f.exit(&tok)
	c := f.c
	if !f.canRead {
		return 0, &sever.ObjectError{Object: c.obj, Err: fmt.Errorf("not open for reading: %w", syscall.EBADF)}
	}
	if c.ops.Read == nil {
		return 0, &sever.ObjectError{Object: c.obj, Err: fmt.Errorf("read: %w", syscall.EINVAL)}
	}
	var rerr error
	if err := c.invoke(siteRead, func() { n, rerr = c.ops.Read(&f.call, p) }); err != nil {
		return 0, err
	}
	return n, c.wrap(rerr)
}

// Write is WriteContext without a deadline.
func (f *File) Write(p []byte) (int, error) { return f.WriteContext(context.Background(), p) }

// WriteContext writes p to the device through Ops.Write, waiting as
// ReadContext does while the driver answers sever.ErrWouldBlock. Errors as
// for ReadContext; Write on a file not open for writing wraps EBADF.
func (f *File) WriteContext(ctx context.Context, p []byte) (int, error) {
	n, err := f.write(p)
	if f.nonblock || !wouldBlock(err) {
		return n, err
	}
	return f.block(ctx, func() (int, error) { return f.write(p) })
}

func (f *File) write(p []byte) (n int, err error) {
	var tok sever.Token
	err = f.enter(&tok)
	if err != nil {
		return 0, err
	}
	defer f.exit(&tok)
	c := f.c
	if !f.canWrite {
		return 0, &sever.ObjectError{Object: c.obj, Err: fmt.Errorf("not open for writing: %w", syscall.EBADF)}
	}
	if c.ops.Write == nil {
		return 0, &sever.ObjectError{Object: c.obj, Err: fmt.Errorf("write: %w", syscall.EINVAL)}
	}
	var werr error
	if err := c.invoke(siteWrite, func() { n, werr = c.ops.Write(&f.call, p) }); err != nil {
		return 0, err
	}
	return n, c.wrap(werr)
}

// block retries op until it stops answering EAGAIN, sleeping on the file's
// queue between tries. The sequence is taken before each try, so a Notify
// that lands between the driver's "nothing yet" and the sleep is not lost.
func (f *File) block(ctx context.Context, op func() (int, error)) (int, error) {
	if !f.ref.TryGet(tagWait) { // keeps the queue alive while we sleep on it
		return 0, f.c.closed
	}
	defer f.ref.Put(tagWait)
	for {
		seq := f.q.Seq()
		n, err := op()
		if !wouldBlock(err) {
			return n, err
		}
		if _, _, werr := f.q.Wait(ctx, seq); werr != nil {
			switch {
			case f.closed.Load():
				return 0, f.c.closed
			case errors.Is(werr, sever.ErrNoDevice):
				continue // severed: the next try returns the Gone error
			}
			return 0, &sever.ObjectError{Object: f.c.obj, Err: werr}
		}
	}
}

// Ioctl carries out cmd through Ops.Ioctl and returns its result. arg must
// be cmd.Size() bytes long (else an error wrapping EINVAL); the driver
// works on a copy of it, which is copied back into arg only for a command
// that reads (IOR, IOWR) and only on success — so a driver can neither
// keep the caller's memory nor write to it through a command that does
// not read. Without Ops.Ioctl every command fails with ENOTTY. Other errors
// as for Read.
func (f *File) Ioctl(cmd Cmd, arg []byte) (int, error) {
	c := f.c
	if len(arg) != cmd.Size() {
		return 0, &sever.ObjectError{Object: c.obj, Err: fmt.Errorf("ioctl %v: argument of %d bytes: %w", cmd, len(arg), syscall.EINVAL)}
	}
	var tok sever.Token
	err := f.enter(&tok)
	if err != nil {
		return 0, err
	}
	defer f.exit(&tok)
	if c.ops.Ioctl == nil {
		return 0, &sever.ObjectError{Object: c.obj, Err: fmt.Errorf("ioctl %v: %w", cmd, sever.ErrNotTTY)}
	}
	buf := make([]byte, len(arg))
	if cmd.Writes() {
		copy(buf, arg)
	}
	var r int
	var ierr error
	if err := c.invoke(siteIoctl, func() { r, ierr = c.ops.Ioctl(&f.call, cmd, buf) }); err != nil {
		return 0, err
	}
	if ierr != nil {
		return r, c.wrap(ierr)
	}
	if cmd.Reads() {
		copy(arg, buf)
	}
	return r, nil
}

// Poll reports the open's readiness without blocking: Ops.Poll's answer
// (EventIn|EventOut without one). Once the device is unregistering it
// returns EventErr|EventHup and the Gone error, without calling the driver;
// after Close, 0 and an error wrapping ErrClosed. If Ops.Poll panics it
// returns EventErr and an error wrapping ErrIO.
func (f *File) Poll() (sever.Events, error) {
	var tok sever.Token
	err := f.enter(&tok)
	if err != nil {
		if f.closed.Load() {
			return 0, err
		}
		return sever.EventErr | sever.EventHup, err
	}
	defer f.exit(&tok)
	c := f.c
	if c.ops.Poll == nil {
		return sever.EventIn | sever.EventOut, nil
	}
	var ev sever.Events
	if err := c.invoke(sitePoll, func() { ev = c.ops.Poll(&f.call) }); err != nil {
		return sever.EventErr, err
	}
	return ev, nil
}

// Wait blocks until Poll reports one of want, or EventErr or EventHup, and
// returns what it reported (masked to those). It sleeps on the file's own
// wait queue, outside the device, and polls again at each Notify. When the
// device is unregistered it returns EventErr|EventHup and the Gone error;
// when the File is closed, 0 and an error wrapping ErrClosed; when ctx is
// done, 0 and ctx's error.
func (f *File) Wait(ctx context.Context, want sever.Events) (sever.Events, error) {
	if f.closed.Load() || !f.ref.TryGet(tagWait) {
		return 0, f.c.closed
	}
	defer f.ref.Put(tagWait)
	mask := want | sever.EventErr | sever.EventHup
	for {
		seq := f.q.Seq()
		ev, err := f.Poll()
		if err != nil || ev&mask != 0 {
			return ev & mask, err
		}
		if _, _, werr := f.q.Wait(ctx, seq); werr != nil {
			switch {
			case f.closed.Load():
				return 0, f.c.closed
			case errors.Is(werr, sever.ErrNoDevice):
				continue // severed: the next Poll reports it
			}
			return 0, &sever.ObjectError{Object: f.c.obj, Err: werr}
		}
	}
}

// Mmap maps the device's region index (Config.Regions), after asking
// Ops.Mmap if there is one. The mapping stays valid — after Close, after
// the device is unregistered, after its driver is unloaded — until Unmap;
// the framework frees the region's memory only when the device is
// unregistered and the last mapping and open are gone. An index out of range fails with an error
// wrapping EINVAL; other errors as for Read.
func (f *File) Mmap(index int) (*sever.Mapping, error) {
	var tok sever.Token
	err := f.enter(&tok)
	if err != nil {
		return nil, err
	}
	defer f.exit(&tok)
	c := f.c
	if index < 0 || index >= len(c.regions) {
		return nil, &sever.ObjectError{Object: c.obj, Err: fmt.Errorf("mmap of region %d of %d: %w", index, len(c.regions), syscall.EINVAL)}
	}
	if mm := c.ops.Mmap; mm != nil {
		var merr error
		if err := c.invoke(siteMmap, func() { merr = mm(&f.call, index) }); err != nil {
			return nil, err
		}
		if merr != nil {
			return nil, c.wrap(merr)
		}
	}
	m, err := c.regions[index].Map()
	if err != nil {
		return nil, c.wrap(err)
	}
	return m, nil
}

// Close closes the file. If the device is live, Close waits for the
// operations in flight on this File and runs the open's Release on this
// goroutine; the device's unregistration waits for it. If the device is
// unregistering or unregistered, the unregistration runs (or ran) the
// Release and Close calls no driver code. Either way Close wakes this
// file's waiters (they return ErrClosed) and returns nil; the shell is
// freed when its last reference is put, here or later. A second Close
// returns an error wrapping ErrClosed.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return f.c.closed
	}
	f.q.Sever() // wake this file's waiters; they see closed
	f.rw.Lock() // wait for this file's operations inside the driver
	c := f.c
	if tok, ok := c.a.Enter(); ok {
		// Inside the access, so an Unregister draining the device waits
		// for this Release: after it returns no Release is running. If
		// the Enter fails, the Unregister will run the Release (it holds
		// the list's reference until it has).
		mine := c.unlink(f)
		f.release()
		c.a.Exit(&tok)
		if mine {
			f.ref.Put(tagOpenList)
		}
	}
	f.rw.Unlock()
	f.ref.Put(nil)
	return nil
}
