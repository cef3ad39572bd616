package chardev

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/sever-dev/sever"
)

// File is an open char device: a sever.Shell of the device's scope, plus
// the open's access mode and Private. The shell holds the wait queue its
// pollers and blocked readers sleep on and a hold on each of the device's
// regions. Its states are the shell's:
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
	sh       *sever.Shell
	canRead  bool
	canWrite bool
	nonblock bool
	private  any

	// rw is held shared by each operation inside the driver and exclusively
	// by Close around Release, so Release never overlaps a call of its open.
	rw sync.RWMutex
}

// Cdev returns the char device the file is open on.
func (f *File) Cdev() *Cdev { return f.c }

// enter begins an operation in the driver: it takes f.rw shared and enters
// the device's scope through the shell.
func (f *File) enter(tok *sever.Token) error {
	if f.sh.Closed() {
		return f.c.closed
	}
	f.rw.RLock()
	if err := f.sh.Enter(tok); err != nil { // fails if Close won the race for rw
		f.rw.RUnlock()
		if f.sh.Closed() {
			return f.c.closed
		}
		return err
	}
	return nil
}

func (f *File) exit(tok *sever.Token) {
	f.sh.Exit(tok)
	f.rw.RUnlock()
}

// invoke calls the driver's fn, Ops code at site, through the protocol's
// one fault policy (sever.Shell.Invoke).
func (f *File) invoke(site int, fn func() error) error {
	return f.sh.Invoke(f.c.sites[site], fn)
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
	if err := f.invoke(siteRead, func() error { n, rerr = c.ops.Read(&f.call, p); return nil }); err != nil {
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
	if err := f.invoke(siteWrite, func() error { n, werr = c.ops.Write(&f.call, p); return nil }); err != nil {
		return 0, err
	}
	return n, c.wrap(werr)
}

// block retries op until it stops answering EAGAIN, sleeping on the file's
// queue between tries. The sequence is taken before each try, so a Notify
// that lands between the driver's "nothing yet" and the sleep is not lost.
func (f *File) block(ctx context.Context, op func() (int, error)) (int, error) {
	if !f.sh.Hold() { // keeps the queue alive while we sleep on it
		return 0, f.c.closed
	}
	defer f.sh.Unhold()
	for {
		seq := f.sh.Seq()
		n, err := op()
		if !wouldBlock(err) {
			return n, err
		}
		if _, _, werr := f.sh.Wait(ctx, seq); werr != nil {
			switch {
			case f.sh.Closed():
				return 0, f.c.closed
			case errors.Is(werr, f.c.gone):
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
	if err := f.invoke(siteIoctl, func() error { r, ierr = c.ops.Ioctl(&f.call, cmd, buf); return nil }); err != nil {
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
		if f.sh.Closed() {
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
	if err := f.invoke(sitePoll, func() error { ev = c.ops.Poll(&f.call); return nil }); err != nil {
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
	if !f.sh.Hold() { // keeps the queue alive while we sleep on it
		return 0, f.c.closed
	}
	defer f.sh.Unhold()
	mask := want | sever.EventErr | sever.EventHup
	for {
		seq := f.sh.Seq()
		ev, err := f.Poll()
		if err != nil || ev&mask != 0 {
			return ev & mask, err
		}
		if _, _, werr := f.sh.Wait(ctx, seq); werr != nil {
			switch {
			case f.sh.Closed():
				return 0, f.c.closed
			case errors.Is(werr, f.c.gone):
				continue // severed: the next Poll reports it
			}
			return 0, &sever.ObjectError{Object: f.c.obj, Err: werr}
		}
	}
}

// OnChange registers fn to run once, when Wait would poll again: on the
// goroutine of the driver's next Notify, of the device's unregistration
// (from its start, when Poll begins reporting EventErr|EventHup) or of
// Close — or at once if the File is closed. To miss nothing, register
// first, then Poll. cancel removes the registration and reports whether fn
// had not run and now never will. fn runs whatever the Notify's events, so
// it should poll again rather than trust them. fn is framework code: it
// runs on the notifier's goroutine — the driver's, which may hold its own
// locks — so it must not block, may take only leaf locks and must never
// call driver code (see sever.Shell.OnChange).
func (f *File) OnChange(fn func()) (cancel func() bool) {
	return f.sh.OnChange(fn)
}

// Mmap maps the device's region index (Config.Regions), after asking
// Ops.Mmap if there is one. The mapping stays valid — after Close, after
// the device is unregistered, after its driver is unloaded — until Unmap;
// the region's Free runs only when the device is unregistered and the last
// mapping and open are gone. An index out of range fails with an error
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
		if err := f.invoke(siteMmap, func() error { merr = mm(&f.call, index); return nil }); err != nil {
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
	if f.sh.Closed() {
		return f.c.closed
	}
	f.rw.Lock() // wait for this file's operations inside the driver
	defer f.rw.Unlock()
	if err := f.sh.Close(); err != nil {
		return f.c.closed
	}
	return nil
}
