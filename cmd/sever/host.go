package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sever-dev/sever/sim/pc"
)

// hostCmd is `sever host KIND`, unlisted: the driver host process that
// `sever mount --hosts` starts, serving on the listener it inherits as
// file descriptor 3 until its supervisor goes or it is told to stop.
func hostCmd(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		complain(stderr, "usage: sever host %s (started by sever mount --hosts)", pc.CP2112Host)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := pc.ServeHost(ctx, args[0]); err != nil {
		complain(stderr, "sever host %s: %v", args[0], err)
		return 1
	}
	return 0
}
