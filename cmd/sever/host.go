package main

import (
	"context"
	"fmt"
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
		fmt.Fprintf(stderr, "usage: sever host %s (started by sever mount --hosts)\n", pc.CP2112Host)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := pc.ServeHost(ctx, args[0]); err != nil {
		fmt.Fprintf(stderr, "sever host %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
