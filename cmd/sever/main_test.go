package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// `sever mount --hosts` in a test starts os.Executable() — this
	// binary — as `host KIND`: be the driver host, not the tests.
	if len(os.Args) > 1 && os.Args[1] == "host" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}
