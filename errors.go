package sever

import (
	"errors"
	"syscall"
)

// errnoError is a sever error that means one errno. It unwraps to the
// syscall.Errno, so errors.Is(err, syscall.ENODEV) holds for ErrNoDevice and
// for every error that wraps it, and a process on the FUSE mount sees the
// same errno a Go caller does.
type errnoError struct {
	errno syscall.Errno
	text  string
}

func (e *errnoError) Error() string { return e.text }
func (e *errnoError) Unwrap() error { return e.errno }

// The errors sever returns. Each satisfies errors.Is with its syscall errno.
var (
	ErrNoDevice     error = &errnoError{syscall.ENODEV, "no such device"}         // provider severed or gone
	ErrIO           error = &errnoError{syscall.EIO, "input/output error"}        // uio-style severed device
	ErrBusy         error = &errnoError{syscall.EBUSY, "device or resource busy"} // refused while in use
	ErrInvalid      error = &errnoError{syscall.EINVAL, "invalid argument"}       // malformed input; nothing changed
	ErrClosed       error = &errnoError{syscall.EBADF, "use of closed handle"}    // handle used after Close
	ErrNotExist     error = &errnoError{syscall.ENOENT, "no such file or directory"}
	ErrExist        error = &errnoError{syscall.EEXIST, "file exists"}
	ErrPermission   error = &errnoError{syscall.EACCES, "permission denied"}
	ErrNotDir       error = &errnoError{syscall.ENOTDIR, "not a directory"}
	ErrIsDir        error = &errnoError{syscall.EISDIR, "is a directory"}
	ErrNameTooLong  error = &errnoError{syscall.ENAMETOOLONG, "file name too long"}
	ErrTooLarge     error = &errnoError{syscall.EFBIG, "write too large"}
	ErrNotSupported error = &errnoError{syscall.EOPNOTSUPP, "operation not supported"}
	ErrWouldBlock   error = &errnoError{syscall.EAGAIN, "operation would block"}
	ErrReadOnly     error = &errnoError{syscall.EROFS, "read-only"}
	ErrNotTTY       error = &errnoError{syscall.ENOTTY, "inappropriate ioctl for device"} // unknown ioctl command
	ErrDeadlock     error = &errnoError{syscall.EDEADLK, "resource deadlock avoided"}     // a call that would wait for itself
)

// Errno returns the errno err means: the syscall.Errno found by errors.As
// in its chain, EINTR for a canceled or expired context, 0 for nil, and EIO
// for anything else.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	if isContextErr(err) {
		return syscall.EINTR
	}
	return syscall.EIO
}

// ObjectError names the object an error happened on:
// "kernfs: /devices/usb1/1-1/value: no such device".
type ObjectError struct {
	Object string
	Err    error
}

func (e *ObjectError) Error() string { return e.Object + ": " + e.Err.Error() }
func (e *ObjectError) Unwrap() error { return e.Err }
