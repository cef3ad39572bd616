package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sever-dev/sever/uevent"
)

const watchHelp = `usage: sever watch [--subsystem S] [--coldplug]

Prints the host's device events as they happen, one JSON object per line,
like 'udevadm monitor --kernel --property': action, subsystem, devpath,
devname (when the device has a node under /dev), seqnum and properties.
It reads the kernel's uevents from a netlink socket and needs no privilege.
Exits 0 on SIGINT or SIGTERM.

When events may have been lost — the kernel dropped some (ENOBUFS), or this
program fell behind — it says so with a line {"action":"resync",...} and
then prints every device present, each as an "add" with "coldplug":true:
what it knew before that line may be stale.

flags:
`

// watchCmd is 'sever watch': until SIGINT or SIGTERM.
func watchCmd(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return watch(ctx, args, stdout, stderr)
}

// watch prints events until ctx is done (exit 0), the output fails or the
// socket does (exit 1).
func watch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	subsystem := fs.String("subsystem", "", "print only events of subsystem `S` (tty, net, block, hidraw, usb, …)")
	coldplug := fs.Bool("coldplug", false, "first print every device present, as add events with \"coldplug\":true")
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), watchHelp) // as PrintDefaults below, which returns no error either
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		complain(stderr, "sever watch: unexpected argument %q", fs.Arg(0))
		return 2
	}
	w, err := uevent.Listen(uevent.Config{})
	if err != nil {
		complain(stderr, "sever watch: %v", err)
		return 1
	}
	defer func() { _ = w.Close() }() // the first Close of a socket only read from: nothing to lose
	enc := json.NewEncoder(stdout)
	emit := func(ev uevent.Event) bool {
		if *subsystem != "" && ev.Subsystem != *subsystem && ev.Action != uevent.ActionResync {
			return true
		}
		if err := enc.Encode(ev); err != nil {
			complain(stderr, "sever watch: %v", err)
			return false
		}
		return true
	}
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			complain(stderr, "sever watch: %v", err)
			return 1
		}
		if ev.Action == uevent.ActionResync {
			if ev.Reason == uevent.ReasonStart && !*coldplug {
				continue
			}
			if ev.Reason != uevent.ReasonStart && !emit(ev) {
				return 1
			}
			for _, d := range ev.Snapshot {
				if !emit(d) {
					return 1
				}
			}
			continue
		}
		if !emit(ev) {
			return 1
		}
	}
}
