// Command sever runs sever's demonstrations.
//
//	sever demo    run every seed scenario, correct and naive, on simulated
//	              machines and print the checker's verdicts
//	sever mount   serve the standard simulated machine's sys/ and dev/ at a
//	              directory through FUSE, for real processes
//	sever stress  run random operations and injected faults from many
//	              goroutines and check every invariant
//	sever watch   print the host's device events (uevents) as JSON lines
//
// Run 'sever demo --help' for its flags. The older self-check of the core
// primitives is still there, unlisted, as 'sever selfcheck'.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "demo":
		return demo(args[1:], stdout, stderr)
	case "mount":
		return mountCmd(args[1:], stdout, stderr)
	case "stress":
		return stressCmd(args[1:], stdout, stderr)
	case "watch":
		return watchCmd(args[1:], stdout, stderr)
	case "host": // unlisted: the driver host process `sever mount --hosts` starts
		return hostCmd(args[1:], stderr)
	case "selfcheck":
		verbose := len(args) > 1 && (args[1] == "-v" || args[1] == "--v")
		return selfCheck(stdout, stderr, verbose)
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	complain(stderr, "sever: unknown command %q", args[0])
	usage(stderr)
	return 2
}

// usage prints the commands to w. A help that cannot be written has
// nowhere else to go: its error is dropped, as flag's PrintDefaults does.
func usage(w io.Writer) {
	_, _ = fmt.Fprint(w, `usage: sever <command> [flags]

commands:
  demo    run every seed scenario in both variants on fresh simulated
          machines and print a verdict table and a timeline (exit 0 only
          when every correct variant is clean and every naive one is caught)
  mount   boot the standard simulated machine and serve its sys/ and dev/
          at a directory through FUSE until SIGINT or SIGTERM
  stress  run a random mix of plugs, unplugs, unloads, file and device
          operations and injected driver faults from many goroutines on
          simulated machines, checking every invariant (exit 0 only when
          nothing is found); replayable by seed
  watch   print the host's real device events as JSON lines until SIGINT

Run 'sever <command> --help' for a command's flags.
`)
}

// parseFlags parses a command's flags. It returns -1 when the command should
// go on, and otherwise the exit code: 0 after printing the help that -h or
// --help asked for (to stdout), 2 after a parse error (already reported on
// fs's output).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) int {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	return -1
}
