package main

import (
	"fmt"
	"io"
)

// report is a command's output on stdout. It keeps the first write error
// and writes nothing after it, so a command prints line by line without a
// check on each and fails once at the end (a closed pipe, a full disk)
// instead of exiting 0 over a report nobody got.
type report struct {
	w   io.Writer
	err error
}

// Write writes p unless an earlier write failed; it keeps the first error.
func (r *report) Write(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.w.Write(p)
	r.err = err
	return n, err
}

// printf and println write to r; the error stays in r.err.
func (r *report) printf(format string, a ...any) { _, _ = fmt.Fprintf(r, format, a...) }
func (r *report) println(a ...any)               { _, _ = fmt.Fprintln(r, a...) }

// keep records err (a tabwriter's Flush, a file's Close) as r's, if r has
// none yet.
func (r *report) keep(err error) {
	if r.err == nil {
		r.err = err
	}
}

// complain writes a diagnostic to stderr. One that cannot be written has
// nowhere else to go, and the exit code says the command failed anyway.
func complain(stderr io.Writer, format string, a ...any) {
	_, _ = fmt.Fprintf(stderr, format+"\n", a...)
}
