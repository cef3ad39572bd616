// Command sever runs sever's demonstrations.
//
//	sever demo    check the lifetime primitives and print the verdicts
//
// Until the simulated machine and the seed scenarios land, demo runs a
// self-check of the core primitives: each check is written once correctly
// (the checker must stay clean) and, where the seeds describe a bug, once
// naively (the checker must catch it).
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
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "sever: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: sever <command> [flags]

commands:
  demo    run the lifetime checks and print a verdict table (exit 0 only
          when every correct variant is clean and every naive one is caught)

Run 'sever <command> --help' for a command's flags.
`)
}

func demo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "print every violation the checker recorded, with its stack")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sever demo [-v]

Runs each check on fresh primitives with its own violation log and prints
one row per check: the check, the variant (correct or naive), the operations
it ran, the violations recorded by class, and the verdict. A correct variant
passes when its log is clean; a naive variant passes when the checker caught
the bug it plants. Exits 0 only when every row passes.

This is the self-check of the core primitives; the seed scenarios on a
simulated machine replace it as they land.

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	return selfCheck(stdout, *verbose)
}
