package sever_test

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/sever-dev/sever"
)

func TestErrorsMatchTheirErrno(t *testing.T) {
	for _, c := range []struct {
		err   error
		errno syscall.Errno
	}{
		{sever.ErrNoDevice, syscall.ENODEV},
		{sever.ErrIO, syscall.EIO},
		{sever.ErrBusy, syscall.EBUSY},
		{sever.ErrInvalid, syscall.EINVAL},
		{sever.ErrClosed, syscall.EBADF},
		{sever.ErrNotExist, syscall.ENOENT},
	} {
		wrapped := &sever.ObjectError{Object: "/devices/usb1/1-1/value", Err: fmt.Errorf("read: %w", c.err)}
		if !errors.Is(wrapped, c.errno) || !errors.Is(wrapped, c.err) {
			t.Errorf("%v wrapped does not satisfy errors.Is with %v", c.err, c.errno)
		}
		if got := sever.Errno(wrapped); got != c.errno {
			t.Errorf("Errno(%v) = %v, want %v", wrapped, got, c.errno)
		}
	}
	if sever.Errno(nil) != 0 || sever.Errno(context.Canceled) != syscall.EINTR || sever.Errno(errors.New("x")) != syscall.EIO {
		t.Error("Errno of nil, a context error or a plain error is wrong")
	}
}
