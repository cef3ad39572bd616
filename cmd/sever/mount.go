package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/fuse"
	"github.com/sever-dev/sever/fusefs"
	"github.com/sever-dev/sever/sim/pc"
)

const mountHelp = `usage: sever mount [flags] DIR

Boots the standard simulated machine (package sim/pc: a CP2112 USB GPIO/I2C
board in USB port 1 with a gpio-keys consumer, a zram disk, a cgroup with a
pressure file, a tcmu device with its uio char device, an AHCI controller
with a SCSI disk) and serves it as a real file system at DIR until SIGINT
or SIGTERM:

  DIR/sys  the machine's sysfs: devices/, bus/, class/, block/, module/, ...
  DIR/dev  its char devices (gpiochip0, uio0, ...) as regular files

Controls, from any shell:

  echo cp2112 > DIR/sys/bus/usb/ports/N/connect   plug a board into port N
  echo 1 > DIR/sys/bus/usb/ports/N/disconnect     unplug it (surprise removal)
  echo 1 > DIR/sys/bus/usb/ports/N/sim/line3      drive the board's input line 3
  echo try > DIR/sys/module/NAME/unload           unload if unused (else EBUSY)
  echo force > DIR/sys/module/NAME/unload         sever its users, then unload
  echo 1 > DIR/sys/block/sda/device/delete        remove the SCSI disk

With --hosts the CP2112 of port 1 runs in a driver host, a child process:
DIR/sys/hosts/cp2112/ has its pid, state, restarts and generation, and
"echo 1 > restart" restarts it; a kill -9 of its pid is a surprise removal
of everything it provided (under devices/host-cp2112/, dev/cp2112-gpiochip0).

dev/gpiochipN speaks text: write "request 3 both", then read lines
"3 rising 1"; write "get 3", then read "3 0". See README.md, "sever mount".

DIR is created if missing. A stale mount left at DIR by a run that was
killed is detected and unmounted first. The mount uses default_permissions
(the kernel checks each file's mode bits) and is visible only to the user
who mounted it unless --allow-other is given.

On SIGINT or SIGTERM (or when DIR is unmounted from outside) it unmounts,
forcing it if processes still hold files open there, then quiesces the
machine — unplugs every device, unloads every module, audits what is left —
and prints the checker's summary; a second signal kills it at once (the
next run cleans up the stale mount). Exits 0 when the machine quiesced clean;
1 when the checker recorded a violation or something failed; 2 for bad
flags.

flags:
`

type mountFlags struct {
	allowOther   bool
	ports        int
	name         string
	entryTimeout time.Duration
	tracking     bool
	hosts        bool
	verbose      bool
}

// mountCmd is `sever mount`: it serves until SIGINT or SIGTERM.
func mountCmd(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts the orderly end; a second one, while the
	// unmount or the quiesce runs, kills the process as usual.
	context.AfterFunc(ctx, stop)
	return serveMount(ctx, args, stdout, stderr, nil)
}

// serveMount runs `sever mount` with args until ctx is done: the signals,
// for the command; a cancel, for a test. ready, if not nil, is called once
// the file system is being served, with the mount's server and machine.
func serveMount(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(*fusefs.Server, *pc.PC)) int {
	var f mountFlags
	fs := flag.NewFlagSet("mount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&f.allowOther, "allow-other", false, "let users other than the one who mounts use the mount (FUSE allow_other; a non-root mounter needs user_allow_other in /etc/fuse.conf)")
	fs.IntVar(&f.ports, "ports", 4, "the USB host's number of ports")
	fs.StringVar(&f.name, "name", "pc", "the machine's name, in its log and trace")
	fs.DurationVar(&f.entryTimeout, "entry-timeout", fusefs.DefaultEntryTimeout, "how long the kernel may cache a name (removals invalidate theirs at once)")
	fs.BoolVar(&f.tracking, "tracking", false, "record who takes every reference, so violations name holders with stacks (slower)")
	fs.BoolVar(&f.hosts, "hosts", false, "run the CP2112 of port 1 in a driver host: a child process whose death is a surprise removal (see /hosts/cp2112/)")
	fs.BoolVar(&f.verbose, "v", false, "print every violation with where it happened, not only the summary")
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), mountHelp) // as PrintDefaults below, which returns no error either
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		complain(stderr, "sever mount: want exactly one directory")
		fs.Usage()
		return 2
	}
	dir, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		complain(stderr, "sever mount: %v", err)
		return 1
	}
	out := &report{w: stdout}
	logf := func(format string, args ...any) {
		complain(stderr, "sever mount: "+format, args...)
	}

	// A run that was killed leaves a mount whose server is gone: every
	// access to it fails with ENOTCONN until it is unmounted.
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			logf("%v", err)
			return 1
		}
	} else if stale, err := fusefs.Unstale(dir); err != nil {
		logf("%v", err)
		return 1
	} else if stale {
		logf("%s was a stale FUSE mount left by a run that did not unmount (killed?); unmounted it", dir)
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // as /proc/self/mountinfo will name it
	}

	var popts []pc.Option
	popts = append(popts, pc.Ports(f.ports))
	if f.tracking {
		popts = append(popts, pc.WithTracking())
	}
	if f.hosts {
		exe, err := os.Executable()
		if err != nil {
			logf("--hosts: %v", err)
			return 1
		}
		popts = append(popts, pc.DriverHosts(exe, "host", pc.CP2112Host))
	}
	bootCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	machine, err := pc.Boot(bootCtx, f.name, popts...)
	cancel()
	if err != nil {
		logf("%v", err)
		return 1
	}
	if ctx.Err() != nil { // a signal while booting: end before mounting
		out.println("sever mount: stopped while booting; nothing mounted")
		return quiesce(machine, out, stderr, f.verbose)
	}
	m := machine.Machine()
	mopts := []fusefs.Option{fusefs.Logf(logf), fusefs.EntryTimeout(f.entryTimeout)}
	if f.allowOther {
		mopts = append(mopts, fusefs.AllowOther())
	}
	srv, err := fusefs.Mount(dir, fusefs.Sources{Sys: m.Sysfs(), Dev: m.Dev()}, mopts...)
	if err != nil {
		logf("%v", err)
		_ = quiesce(machine, out, stderr, f.verbose) // 1 already: the mount failed
		return 1
	}
	out.printf("sever mount: serving machine %q at %s (sys/, dev/); SIGINT or SIGTERM unmounts\n", f.name, dir)
	if ready != nil {
		ready(srv, machine)
	}

	select {
	case <-ctx.Done():
		out.printf("sever mount: unmounting %s\n", dir)
	case <-unmountedFromOutside(ctx, dir):
		out.printf("sever mount: %s was unmounted from outside\n", dir)
	}
	code := 0
	if err := srv.Close(); err != nil {
		logf("%v", err)
		code = 1
	}
	if quiesce(machine, out, stderr, f.verbose) != 0 {
		code = 1
	}
	if out.err != nil {
		complain(stderr, "sever mount: writing to stdout: %v", out.err)
		code = 1
	}
	return code
}

// quiesce ends the machine's life and prints the checker's summary; it
// returns 1 if the checker recorded anything or the teardown failed.
func quiesce(machine *pc.PC, out *report, stderr io.Writer, verbose bool) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vs, err := machine.Quiesce(ctx)
	code := 0
	if err != nil {
		complain(stderr, "sever mount: quiesce: %v", err)
		code = 1
	}
	if len(vs) == 0 {
		out.println("sever mount: machine quiesced clean: no violations")
		return code
	}
	out.printf("sever mount: %d violation(s): %s\n", len(vs), summary(vs))
	for i, v := range vs {
		if !verbose && i >= 10 {
			out.printf("  ... and %d more (-v prints them all)\n", len(vs)-i)
			break
		}
		out.printf("  %v\n", v)
		if verbose && v.Stack != "" {
			out.printf("    at %s\n", strings.ReplaceAll(strings.TrimSpace(v.Stack), "\n", "\n    "))
		}
	}
	return 1
}

// summary is "2 use-after-free, 1 release-never-run", by class.
func summary(vs []check.Violation) string {
	counts := map[check.Class]int{}
	for _, v := range vs {
		counts[v.Class]++
	}
	var parts []string
	for _, c := range check.Classes() {
		if n := counts[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %v", n, c))
		}
	}
	return strings.Join(parts, ", ")
}

// unmountedFromOutside returns a channel closed when dir stops being a
// mount point of this process's mount namespace (fusermount3 -u by hand),
// checked every second from /proc/self/mountinfo — never by touching the
// mount itself, which this process serves. It stops when ctx is done.
func unmountedFromOutside(ctx context.Context, dir string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				mounted, err := isMountPoint(dir)
				if err == nil && !mounted {
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}

// isMountPoint reports whether dir is listed as a mount point in
// /proc/self/mountinfo.
func isMountPoint(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }() // read only: a close cannot lose anything
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Field 5 is the mount point, with spaces and the like octal-escaped.
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fuse.UnescapeMountinfo(fields[4]) == dir {
			return true, nil
		}
	}
	return false, errors.Join(sc.Err())
}
